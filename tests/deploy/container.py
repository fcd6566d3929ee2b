"""Build the appliance image with deploy/docker/build.sh and run it with podman, as the README does.

podman needs `--runtime runc --cgroup-manager cgroupfs` on this kind of machine (crun refuses
its hybrid cgroups) and ulimits within what is allowed here; the container shares the host's
network so that it reaches the harness brokers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT
from tests.deploy.tools import missing, run

IMAGE = "localhost/natsbridge:test"
GRACE_S = 40  # --stop-timeout: more than the bridge's drain_timeout
RUN_FLAGS = (
    "--network", "host",
    "--read-only",
    "--ulimit", "nofile=4096:4096",
    "--ulimit", "nproc=4096:4096",
    "--stop-timeout", str(GRACE_S),
)  # fmt: skip


def podman() -> list[str]:
    """podman with the runtime flags this machine needs (fails under CI when it is missing)."""
    found = shutil.which("podman")
    if found is None:
        missing("podman", "apt-get install podman runc debootstrap (what .ci/run does)")
        raise AssertionError("unreachable")
    flags = os.environ.get("NATSBRIDGE_PODMAN_FLAGS", "--runtime runc --cgroup-manager cgroupfs")
    return [found, *flags.split()]


def build_image() -> str:
    """deploy/docker/build.sh, exactly as documented: offline build, tagged IMAGE."""
    env = {**os.environ, "NATSBRIDGE_IMAGE": IMAGE, "NATSBRIDGE_ENGINE": "podman"}
    run(["bash", str(REPO_ROOT / "deploy/docker/build.sh")], env=env, timeout=1200)
    return IMAGE


class Container:
    """One `podman run -d` of the image over a config file and a named data volume."""

    def __init__(self, name: str, config: Path, volume: str, port: int) -> None:
        self.name, self.config, self.volume, self.port = name, config, volume, port

    def start(self) -> None:
        """podman run -d: the image's entrypoint with this config and admin port."""
        run(
            [
                *podman(), "run", "-d", "--name", self.name, *RUN_FLAGS,
                "-v", f"{self.config}:/etc/natsbridge/bridge.yaml:ro",
                "-v", f"{self.volume}:/var/lib/natsbridge",
                "-e", f"NATSBRIDGE_HEALTHCHECK_URL=http://127.0.0.1:{self.port}/healthz",
                IMAGE,
                "run", "-c", "/etc/natsbridge/bridge.yaml",
                "--admin-listen", f"127.0.0.1:{self.port}",
            ]
        )  # fmt: skip

    def get(self, path: str) -> tuple[int, Any]:
        """(status, parsed JSON or text) of an admin path; (0, reason) when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read()
                return r.status, json.loads(body) if "json" in r.headers["Content-Type"] else body
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def wait(self, path: str, timeout: float = 90) -> Any:
        """Wait until an admin path answers 200 (fails, with the logs, if the container exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get(path)
            if status == 200:
                return body
            if self.inspect("{{.State.Running}}") != "true":
                raise AssertionError(f"container exited:\n{self.logs()}")
            time.sleep(0.3)
        raise AssertionError(f"{path} not 200 after {timeout}s: {body}\n{self.logs()}")

    def routes(self) -> dict[str, dict[str, Any]]:
        """/api/routes keyed by route name."""
        body = self.wait("/api/routes")
        return {route["name"]: route for route in body["routes"]}

    def inspect(self, template: str) -> str:
        return run([*podman(), "inspect", "--format", template, self.name]).stdout.strip()

    def podman(self, *args: str, check: bool = True) -> str:
        """podman ARGS NAME (stop, healthcheck run, exec ...): its stdout."""
        return run([*podman(), *args], check=check, timeout=GRACE_S + 30).stdout.strip()

    def logs(self) -> str:
        result = run([*podman(), "logs", "--tail", "40", self.name], check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        run([*podman(), "rm", "-f", "-t", "0", self.name], check=False)
