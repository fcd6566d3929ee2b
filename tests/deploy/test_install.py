"""`pip install .` in a fresh venv outside the repository, as a user does.

The installed names are natsbridge.*, so PyPI's `connectors` and `mappings` distributions
(each a top-level package of that name) can be installed beside natsbridge without
overwriting it. Without extras no broker client is installed, and `validate` still
checks every example.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from natsbridge import __version__
from tests.conftest import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


def run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv, outside the repository, with `pip install <repo>` and nothing else."""
    home = tmp_path_factory.mktemp("fresh")
    run(sys.executable, "-m", "venv", home / "venv", cwd=home)
    bin_dir = home / "venv" / "bin"
    run(bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check", REPO_ROOT, cwd=home)
    return bin_dir


def test_python_m_natsbridge_and_validate_every_example(venv: Path) -> None:
    cwd = venv.parent.parent
    assert run(venv / "python", "-m", "natsbridge", "--version", cwd=cwd).strip() == (
        f"natsbridge {__version__}"
    )
    for example in EXAMPLES:
        run(venv / "natsbridge", "validate", "-c", example, cwd=cwd)
    installed = run(venv / "pip", "list", "--format", "freeze", cwd=cwd).lower()
    for client in ("pika", "kafka-python", "stomp.py", "paho-mqtt"):
        assert f"{client}==" not in installed, f"{client} installed without its extra"


def test_pypi_connectors_and_mappings_beside_it_break_nothing(venv: Path) -> None:
    cwd = venv.parent.parent
    quiet = ("--quiet", "--disable-pip-version-check")
    run(venv / "pip", "install", *quiet, "connectors", "mappings", cwd=cwd)
    site = run(venv / "python", "-c", "import connectors, mappings; print('ok')", cwd=cwd)
    assert site.strip() == "ok"  # their top-level packages are there, and so is ours:
    run(venv / "python", "-m", "natsbridge", "--version", cwd=cwd)
    for example in EXAMPLES:
        run(venv / "natsbridge", "validate", "-c", example, cwd=cwd)
