"""Run `natsbridge run` as a real child process: start, wait ready, kill -9, SIGTERM.

End-to-end tests drive the bridge exactly as an operator does: a config file on disk,
a data dir, the admin endpoint for readiness and counters, and signals.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

READY_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test or benchmark that started it dies.

    Otherwise a killed test run leaves bridges behind that keep consuming the shared
    brokers' queues (a later run then misses the messages they took).
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write `config` as YAML to `path` and return it."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class BridgeProcess:
    """One bridge process over a config and data dir that outlive it (restartable)."""

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.extra_args = extra_args
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "NATSBRIDGE_DATA_DIR": str(data_dir), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.starts = 0

    @property
    def admin(self) -> str:
        """The admin endpoint's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> None:
        """Start the bridge; with `wait_ready`, return once /readyz says 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n---- start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "natsbridge",
                    "run",
                    "-c",
                    str(self.config),
                    "--admin-listen",
                    f"127.0.0.1:{self.port}",
                    "--log-format",
                    "json",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=log,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until /readyz answers 200 (fails if the process exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"bridge exited with {self.process.returncode}:\n{self.tail()}"
                )
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"bridge not ready after {timeout}s:\n{self.get('/readyz')}\n{self.tail()}"
        )

    def get(self, path: str) -> tuple[int, Any]:
        """(status, parsed JSON or text) of an admin path; (0, reason) if unreachable."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=5) as response:
                return response.status, _body(response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _body(exc.read(), exc.headers)
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def routes(self) -> dict[str, dict[str, Any]]:
        """/api/routes keyed by route name."""
        status, body = self.get("/api/routes")
        assert status == 200, body
        return {route["name"]: route for route in body["routes"]}

    def kill(self) -> None:
        """kill -9: no drain, no cleanup: what a power cut or OOM kill does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the graceful drain; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop whatever is running (test clean-up)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the bridge's log, for assertion messages."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _body(raw: bytes, headers: Any) -> Any:
    if "json" in headers.get("Content-Type", ""):
        return json.loads(raw)
    return raw.decode(errors="replace")
