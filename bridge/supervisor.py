"""`natsbridge run --workers N`: N replica processes of one config on one host, supervised.

Each worker is an ordinary `natsbridge run` child with `--worker I/N` added. It is a
replica like any other: the routes' sources share their work between replicas (AMQP
competing consumers, Kafka consumer groups, JetStream durables, core NATS queue groups;
the README's "Workers and replicas" says which per kind). What `--worker I/N` changes
in the child (`worker_settings`):

* its embedded buffer lives in `<data_dir>/worker-I`, so that a restarted worker takes
  up its own buffer again (a data dir is locked by the one process that writes it);
* its replica name (`bridge.replica`) is `worker-I` (or `<replica>-worker-I`): kinds
  whose clients need a unique identity use it (MQTT client ids);
* its admin endpoint listens on the configured port + I - 1 (worker 1 on the port of
  the config, worker 2 on the next one, ...); `status --admin` reads one worker.

The supervisor restarts a worker that dies (any exit but a clean one after SIGTERM or
`--once`) after a back-off that doubles from RESTART_MIN_S to RESTART_MAX_S and starts
over once a worker ran for RESTART_RESET_AFTER_S. SIGTERM/SIGINT is passed to every
worker, which drains; the supervisor exits once all have, 0 when every one stopped
cleanly. SIGHUP is passed on (each worker reloads). Workers get SIGTERM when the
supervisor itself dies (Linux PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from natsbridge.bridge.errors import ConfigError

if TYPE_CHECKING:
    from natsbridge.bridge.config.model import BridgeSettings

log = logging.getLogger("natsbridge")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
RESTART_RESET_AFTER_S = 30.0  # a worker up this long restarts after RESTART_MIN_S again
POLL_S = 0.2
MAX_WORKERS = 64
MAX_PORT = 65535
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parse_worker(text: str) -> tuple[int, int]:
    """`I/N` of `--worker` (argparse type): this process is worker I of N."""
    index, sep, count = text.partition("/")
    if sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count):
        return int(index), int(count)
    raise ValueError(f"expected I/N with 1 <= I <= N, found {text!r}")


def worker_settings(bridge: BridgeSettings, index: int) -> BridgeSettings:
    """`bridge` as worker `index` sees it: its own data dir, replica name and admin port."""
    worker = f"worker-{index}"
    update: dict[str, object] = {
        "data_dir": f"{bridge.data_dir.rstrip('/')}/{worker}",
        "replica": f"{bridge.replica}-{worker}" if bridge.replica else worker,
    }
    admin = bridge.admin
    if admin.enabled:
        host, _, port = admin.listen.rpartition(":")
        mine = int(port) + index - 1 if int(port) else 0  # port 0: any free port
        if mine > MAX_PORT:
            raise ConfigError(
                [
                    f"bridge.admin.listen: worker {index} would listen on port {mine}, "
                    f"beyond {MAX_PORT}: choose a lower port"
                ]
            )
        listen = f"{host}:{mine}"
        update["admin"] = admin.model_copy(update={"listen": listen})
    return bridge.model_copy(update=update)


@dataclass
class Worker:
    """One worker process and its restart back-off."""

    index: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_MIN_S
    restart_at: float | None = None
    restarts: int = 0
    done: bool = False  # exited cleanly: not restarted
    exit_codes: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Start (or restart) the process."""
        self.process = subprocess.Popen(self.command, preexec_fn=_die_with_parent)
        self.started = time.monotonic()
        self.restart_at = None
        log.info(
            "worker %d started (pid %d)",
            self.index,
            self.process.pid,
            extra={"event": "worker_started", "worker": self.index, "pid": self.process.pid},
        )


class Supervisor:
    """Runs `count` workers of `command` (each gets `--worker I/N`) until SIGTERM."""

    def __init__(self, command: Sequence[str], count: int) -> None:
        self.workers = [
            Worker(index, [*command, "--worker", f"{index}/{count}"])
            for index in range(1, count + 1)
        ]
        self.stopping = False

    def run(self) -> int:
        """Start every worker and keep them running; returns the exit code."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            for worker in self.workers:
                worker.start()
            while not all(worker.done for worker in self.workers):
                self._check()
                time.sleep(POLL_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        clean = all(worker.exit_codes[-1:] == [0] for worker in self.workers)
        log.info(
            "all %d workers stopped%s",
            len(self.workers),
            "" if clean else " (not all cleanly)",
            extra={"event": "workers_stopped"},
        )
        return 0 if clean else 1

    def _check(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.done:
                continue
            if worker.restart_at is not None:
                if now >= worker.restart_at and not self.stopping:
                    worker.restarts += 1
                    worker.start()
                continue
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                continue
            worker.exit_codes.append(code)
            if code == 0 or self.stopping:
                worker.done = True
                log.info(
                    "worker %d exited with %d",
                    worker.index,
                    code,
                    extra={"event": "worker_exited", "worker": worker.index, "code": code},
                )
                continue
            if now - worker.started >= RESTART_RESET_AFTER_S:
                worker.delay = RESTART_MIN_S
            worker.restart_at = now + worker.delay
            log.warning(
                "worker %d (pid %d) died (%s); restarting in %.1fs",
                worker.index,
                worker.process.pid,
                _describe_exit(code),
                worker.delay,
                extra={"event": "worker_died", "worker": worker.index, "code": code},
            )
            worker.delay = min(worker.delay * 2, RESTART_MAX_S)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._forward(signal.SIGHUP)
            return
        if not self.stopping:
            log.info(
                "%s: draining %d workers",
                signal.Signals(signum).name,
                len(self.workers),
                extra={"event": "stopping"},
            )
        self.stopping = True
        for worker in self.workers:
            if worker.restart_at is not None:  # waiting for a restart: nothing to drain
                worker.done = True
        self._forward(signal.SIGTERM)

    def _forward(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signum)


def add_worker_options(run: argparse.ArgumentParser) -> None:
    """`--workers N` for operators, and `--worker I/N`, which the supervisor gives a worker."""
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="run N supervised replica processes (README: Workers and replicas)",
    )
    run.add_argument("--worker", type=_worker_of, help=argparse.SUPPRESS)


def worker_command(args: argparse.Namespace) -> list[str]:
    """The command line of a worker: this `run`, without `--workers`."""
    command = [sys.executable, "-m", "natsbridge", "run", "-c", args.config]
    command += ["--log-level", args.log_level]
    if args.driver_logs:
        command.append("--driver-logs")
    if args.log_format:
        command += ["--log-format", args.log_format]
    if args.admin_listen:
        command += ["--admin-listen", args.admin_listen]
    if args.once:
        command.append("--once")
    return command


def _worker_count(text: str) -> int:
    if text.isdigit() and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_WORKERS}, found {text!r}")


def _worker_of(text: str) -> tuple[int, int]:
    try:
        return parse_worker(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _die_with_parent() -> None:
    """In a worker: SIGTERM when the supervisor dies, so that no worker outlives it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
