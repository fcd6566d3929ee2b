"""Real-broker fixtures shared by every test package.

Brokers come from `deploy/dev/services.sh up`; the fixtures read the endpoints it prints with
`eval "$(deploy/dev/services.sh env)"`. When a variable is unset:

* under CI=true the test fails (a missing broker must never pass as a skip);
* elsewhere, if a Docker engine answers, the broker is started with testcontainers
  (best effort, one container per broker per session);
* otherwise the test is skipped with the command to run.

`services` drives services.sh for fault tests: stop/start/restart a broker, its PID for
SIGSTOP/SIGCONT. Whatever a test stopped or paused through it is brought back afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from natsbridge.bridge import secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_SH = Path(os.environ.get("NATSBRIDGE_SERVICES_SH") or REPO_ROOT / "deploy/dev/services.sh")
BROKERS = ("nats", "rabbitmq", "activemq", "kafka")
HINT = (
    "start the brokers with `deploy/dev/services.sh up`, "
    'then `eval "$(deploy/dev/services.sh env)"`'
)


def in_ci() -> bool:
    """True when running under CI, where a missing broker is an error, never a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _load_probe() -> ModuleType:
    """deploy/dev/probe.py: the raw-socket readiness probes services.sh uses."""
    spec = importlib.util.spec_from_file_location(
        "_natsbridge_probe", SERVICES_SH.parent / "probe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _isolated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets a test registers (bridge.secrets is process-wide) end with the test.

    Property tests register arbitrary short values ("0", "ll"), which would otherwise
    mask innocent text in every later test of the run.
    """
    monkeypatch.setattr(secrets, "_secrets", set(secrets._secrets))
    monkeypatch.setattr(secrets, "_ordered", secrets._ordered)


# --------------------------------------------------------------------------- testcontainers


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@dataclass
class _Containers:
    """Brokers started in Docker for this session, keyed by broker name."""

    available: bool | None = None
    started: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, dict[str, str]] = field(default_factory=dict)

    def endpoint(self, broker: str, key: str) -> str | None:
        if self.available is None:
            self.available = _docker_available()
        if not self.available:
            return None
        if broker not in self.endpoints:
            self.endpoints[broker] = self._start(broker)
        return self.endpoints[broker][key]

    def _start(self, broker: str) -> dict[str, str]:
        from testcontainers.core.container import DockerContainer

        probe = _load_probe()
        if broker == "kafka":
            from testcontainers.kafka import KafkaContainer

            kafka = KafkaContainer().with_kraft().start()
            self.started[broker] = kafka
            return {"bootstrap": kafka.get_bootstrap_server()}
        images: dict[str, tuple[str, list[int], str | None]] = {
            "nats": ("nats:2.12", [4222], "-js"),
            "rabbitmq": (
                "rabbitmq:3.13",
                [5672, 61613],
                "sh -c 'rabbitmq-plugins enable --offline rabbitmq_stomp && rabbitmq-server'",
            ),
            "activemq": ("apache/activemq-classic:5.18.6", [61613], None),
        }
        image, ports, command = images[broker]
        container = DockerContainer(image).with_exposed_ports(*ports)
        if command:
            container = container.with_command(command)
        container.start()
        self.started[broker] = container
        host = container.get_container_host_ip()

        def addr(port: int) -> str:
            return f"{host}:{container.get_exposed_port(port)}"

        checks: list[Callable[[], object]]
        if broker == "nats":
            checks = [lambda: probe.probe_nats(addr(4222))]
            result = {"url": f"nats://{addr(4222)}"}
        elif broker == "rabbitmq":
            checks = [
                lambda: probe.probe_amqp(addr(5672)),
                lambda: probe.probe_stomp(addr(61613), "guest", "guest"),
            ]
            result = {
                "amqp": f"amqp://guest:guest@{addr(5672)}/%2F",
                "stomp": f"stomp://{addr(61613)}",
            }
        else:
            checks = [lambda: probe.probe_stomp(addr(61613), "admin", "admin")]
            result = {"stomp": f"stomp://{addr(61613)}"}
        deadline = time.monotonic() + 120
        for check in checks:
            while True:
                try:
                    check()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        return result

    def stop_all(self) -> None:
        for container in self.started.values():
            with contextlib.suppress(Exception):
                container.stop()


@pytest.fixture(scope="session")
def _containers() -> Iterator[_Containers]:
    containers = _Containers()
    yield containers
    containers.stop_all()


def _endpoint(var: str, what: str, containers: _Containers, broker: str, key: str) -> str:
    value = os.environ.get(var, "").strip()
    if value:
        return value
    message = f"{var} is not set, so there is no {what} to test against: {HINT}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    try:
        started = containers.endpoint(broker, key)
    except Exception as exc:
        pytest.skip(f"{message} (starting {broker} with testcontainers failed: {exc})")
    if started is None:
        pytest.skip(message)
    return started


# --------------------------------------------------------------------------- endpoints


@pytest.fixture(scope="session")
def nats_url(_containers: _Containers) -> str:
    """nats://host:port of a nats-server with JetStream."""
    return _endpoint("NATSBRIDGE_NATS_URL", "NATS server", _containers, "nats", "url")


@pytest.fixture(scope="session")
def nats_cluster_urls() -> list[str]:
    """The client URLs of the 3-node JetStream cluster (services.sh nats-1..3)."""
    urls = os.environ.get("NATSBRIDGE_NATS_CLUSTER_URLS", "").strip()
    if not urls:
        message = f"NATSBRIDGE_NATS_CLUSTER_URLS is not set, so there is no NATS cluster: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return urls.split(",")


@pytest.fixture(scope="session")
def amqp_url(_containers: _Containers) -> str:
    """amqp:// URL (with guest credentials and vhost) of RabbitMQ."""
    return _endpoint("NATSBRIDGE_AMQP_URL", "RabbitMQ", _containers, "rabbitmq", "amqp")


@pytest.fixture(scope="session")
def kafka_bootstrap(_containers: _Containers) -> str:
    """host:port of a Kafka broker's PLAINTEXT listener."""
    return _endpoint(
        "NATSBRIDGE_KAFKA_BOOTSTRAP", "Kafka broker", _containers, "kafka", "bootstrap"
    )


@pytest.fixture(scope="session")
def stomp_rabbitmq_url(_containers: _Containers) -> str:
    """stomp://host:port of RabbitMQ's STOMP plugin (login guest/guest)."""
    return _endpoint(
        "NATSBRIDGE_STOMP_RABBITMQ", "RabbitMQ STOMP listener", _containers, "rabbitmq", "stomp"
    )


@pytest.fixture(scope="session")
def stomp_activemq_url(_containers: _Containers) -> str:
    """stomp://host:port of ActiveMQ Classic's STOMP connector (see activemq_credentials)."""
    return _endpoint(
        "NATSBRIDGE_STOMP_ACTIVEMQ", "ActiveMQ STOMP connector", _containers, "activemq", "stomp"
    )


@pytest.fixture(scope="session")
def activemq_credentials() -> tuple[str, str]:
    """(login, passcode) that ActiveMQ accepts; a wrong passcode is refused."""
    return (
        os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_USER", "admin"),
        os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_PASSWORD", "admin"),
    )


@dataclass(frozen=True)
class KafkaScram:
    """A Kafka SASL_PLAINTEXT listener with a SCRAM-SHA-256 user."""

    bootstrap: str
    username: str
    password: str
    mechanism: str = "SCRAM-SHA-256"


@pytest.fixture(scope="session")
def kafka_scram() -> KafkaScram:
    """The SCRAM-SHA-256 listener of the services.sh Kafka (no testcontainers fallback)."""
    bootstrap = os.environ.get("NATSBRIDGE_KAFKA_SCRAM_BOOTSTRAP", "").strip()
    if not bootstrap:
        message = f"NATSBRIDGE_KAFKA_SCRAM_BOOTSTRAP is not set: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return KafkaScram(
        bootstrap=bootstrap,
        username=os.environ.get("NATSBRIDGE_KAFKA_SCRAM_USER", "natsbridge"),
        password=os.environ.get("NATSBRIDGE_KAFKA_SCRAM_PASSWORD", "natsbridge-secret"),
    )


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test or earlier run uses, safe for topics, queues, streams, subjects."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40] or "test"
    return f"nb-{base}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- services.sh


class ServicesError(RuntimeError):
    """services.sh failed; the message carries its output."""


class Services:
    """Stop, start, restart and pause the brokers that deploy/dev/services.sh runs."""

    def __init__(self, script: Path = SERVICES_SH) -> None:
        self.script = script
        self._stopped: set[str] = set()
        self._paused: dict[str, int] = {}

    def _run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            ["bash", str(self.script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            command = " ".join(args)
            output = proc.stderr + proc.stdout
            raise ServicesError(f"services.sh {command} exited {proc.returncode}:\n{output}")
        return proc.stdout

    @staticmethod
    def _check(name: str) -> None:
        if name not in BROKERS:
            raise ValueError(f"unknown broker {name!r}; one of {', '.join(BROKERS)}")

    def pid(self, name: str) -> int:
        """The broker's main process id."""
        self._check(name)
        return int(self._run("pid", name).strip())

    def stop(self, name: str) -> None:
        """Stop the broker gracefully (SIGTERM); its data is kept."""
        self._check(name)
        self._paused.pop(name, None)
        self._run("stop", name)
        self._stopped.add(name)

    def start(self, name: str) -> None:
        """Start the broker and wait until it serves again."""
        self._check(name)
        self._run("start", name)
        self._stopped.discard(name)

    def restart(self, name: str) -> None:
        """Stop, then start the broker, keeping its data; returns once it serves."""
        self._check(name)
        self._paused.pop(name, None)
        self._run("restart", name)
        self._stopped.discard(name)

    def pause(self, name: str) -> int:
        """SIGSTOP the broker (it keeps its sockets but stops answering); returns its PID."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGSTOP)
        self._paused[name] = pid
        return pid

    def resume(self, name: str) -> None:
        """SIGCONT a broker paused with pause()."""
        pid = self._paused.pop(name, None) or self.pid(name)
        os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[int]:
        """Context manager: the broker is SIGSTOPped inside the block."""
        pid = self.pause(name)
        try:
            yield pid
        finally:
            self.resume(name)

    def status(self) -> str:
        """services.sh status output (raises if any broker is down)."""
        return self._run("status")

    def heal(self) -> None:
        """Bring back whatever this object paused or stopped."""
        for name, pid in list(self._paused.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self._paused.pop(name, None)
        for name in sorted(self._stopped):
            self.start(name)


@pytest.fixture
def services() -> Iterator[Services]:
    """Control of the services.sh brokers; whatever the test stops or pauses is restored."""
    if not SERVICES_SH.is_file():
        pytest.fail(f"{SERVICES_SH} is missing", pytrace=False)
    if not os.environ.get("NATSBRIDGE_SERVICES_SH"):
        # The brokers under test may not be the ones services.sh runs (testcontainers, or
        # endpoints set by hand): restarting services.sh's would prove nothing.
        message = f"NATSBRIDGE_SERVICES_SH is not set: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    svc = Services()
    try:
        yield svc
    finally:
        svc.heal()
