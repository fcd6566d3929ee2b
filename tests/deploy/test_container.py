"""The appliance image, built offline by deploy/docker/build.sh and run with podman.

Built once per session; each test runs its own container (host network, read-only root,
uid 10001) against the harness brokers, with unique exchanges, streams and topics. Without
podman the tests skip, and fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.container import Container, build_image, podman
from tests.deploy.tools import find_tool, run
from tests.e2e.bridge_process import free_port, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.test_kafka_bridge import create_topic, read_topic, wait_for
from tests.e2e.test_rabbitmq_bridge import Rabbit, stream_messages

pytestmark = [pytest.mark.amqp, pytest.mark.nats, pytest.mark.kafka]

COUNT = 2000


@pytest.fixture(scope="session")
def image() -> str:
    """The image, built once per session by deploy/docker/build.sh (offline)."""
    podman()
    return build_image()


@pytest.fixture
def containers(image: str, tmp_path: Path) -> Iterator[Callable[..., Container]]:
    """Make containers over a config and a data volume; all removed afterwards."""
    made: list[Container] = []
    volumes: set[str] = set()

    def make(config: dict[str, Any], volume: str | None = None) -> Container:
        name = f"nb-test-{uuid.uuid4().hex[:10]}"
        volume = volume or f"{name}-data"
        volumes.add(volume)
        path = write_config(tmp_path / f"{name}.yaml", config)
        container = Container(name, path, volume, free_port())
        made.append(container)
        return container

    yield make
    for container in made:
        container.remove()
    for volume in volumes:
        run([*podman(), "volume", "rm", "-f", volume], check=False)


def bridge_config(tag: str, connections: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"ct-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": connections,
        "routes": routes,
    }


def amqp_to_jetstream(tag: str, nats_connection: str = "nats") -> dict[str, Any]:
    return {
        "name": "orders-to-js",
        "from": {"connection": "rabbit", "exchange": f"ct-{tag}", "binding_keys": ["#"]},
        "to": {
            "connection": nats_connection,
            "subject": f"ct{tag}.orders.{{{{routing_key}}}}",
            "jetstream": {"stream": f"CT_{tag}"},
        },
        "delivery": "at_least_once",
    }


def publish(amqp_url: str, exchange: str, bodies: list[str]) -> None:
    rabbit = Rabbit(amqp_url)
    try:
        for body in bodies:
            rabbit.publish(exchange, "eu", body.encode())
    finally:
        rabbit.close()


def stored(nats_url: str, stream: str) -> list[str]:
    return [m.data.decode() for m in asyncio.run(stream_messages(nats_url, stream, timeout=60))]


def test_rabbitmq_to_jetstream_and_jetstream_to_kafka_then_stop_drains(
    amqp_url: str, nats_url: str, kafka_bootstrap: str, containers: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, source = f"ct-out-{tag}", f"CTIN_{tag}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    shipments = [f"s{i}" for i in range(COUNT)]

    async def preload() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=source, subjects=[f"ctin{tag}.*"])
        for first in range(0, COUNT, 500):
            await asyncio.gather(
                *(js.publish(f"ctin{tag}.k", v.encode()) for v in shipments[first : first + 500])
            )
        await nc.close()

    asyncio.run(preload())
    connections = {
        "rabbit": {"kind": "amqp", "url": amqp_url},
        "nats": {"kind": "nats", "servers": [nats_url]},
        "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
    }
    to_kafka = {
        "name": "js-to-kafka",
        "from": {
            "connection": "nats",
            "subject": f"ctin{tag}.*",
            "jetstream": {"stream": source, "durable": "bridge"},
        },
        "to": {"connection": "kafka", "topic": topic},
    }
    bridge = containers(bridge_config(tag, connections, [amqp_to_jetstream(tag), to_kafka]))
    bridge.start()
    bridge.wait("/readyz")
    orders = [f"o{i}" for i in range(COUNT)]
    publish(amqp_url, f"ct-{tag}", orders)
    stream = f"CT_{tag}"
    wait_for(lambda: asyncio.run(stream_count(nats_url, stream)) >= COUNT, what="orders in JS")
    wait_for(lambda: len(read_topic(kafka_bootstrap, topic)) >= COUNT, what="shipments in Kafka")
    assert sorted(stored(nats_url, stream)) == sorted(orders)
    assert sorted(r.value.decode() for r in read_topic(kafka_bootstrap, topic)) == sorted(shipments)
    routes = bridge.routes()
    assert routes["orders-to-js"]["counters"]["delivered"] == COUNT
    assert routes["js-to-kafka"]["counters"]["delivered"] == COUNT
    # SIGTERM, drain, exit 0 within the grace period (past it podman kills: exit 137).
    bridge.podman("stop", bridge.name)
    assert bridge.inspect("{{.State.ExitCode}}") == "0", bridge.logs()
    assert "natsbridge: stopped cleanly" in bridge.logs()


def test_healthcheck_turns_healthy_as_uid_10001_on_a_read_only_root(
    amqp_url: str, nats_url: str, containers: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    connections = {
        "rabbit": {"kind": "amqp", "url": amqp_url},
        "nats": {"kind": "nats", "servers": [nats_url]},
    }
    bridge = containers(bridge_config(tag, connections, [amqp_to_jetstream(tag)]))
    bridge.start()
    bridge.wait("/healthz")
    bridge.podman("healthcheck", "run", bridge.name)
    assert bridge.inspect("{{.State.Health.Status}}") == "healthy"
    status = bridge.podman("exec", bridge.name, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"10001"}, status
    assert bridge.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    write = run([*podman(), "exec", bridge.name, "touch", "/opt/natsbridge/x"], check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    # The data volume is the one writable place the bridge needs.
    assert bridge.podman("exec", bridge.name, "stat", "-c", "%u", "/var/lib/natsbridge") == "10001"
    # The image runs this checkout's code, not a layer cached from an older wheelhouse.
    for module in ("bridge/cli.py", "connectors/amqp/__init__.py", "mappings/__init__.py"):
        installed = f"/opt/natsbridge/lib/python3.11/site-packages/natsbridge/{module}"
        digest = bridge.podman("exec", bridge.name, "sha256sum", installed).split()[0]
        assert digest == hashlib.sha256((REPO_ROOT / module).read_bytes()).hexdigest(), module
    bridge.podman("stop", bridge.name)
    assert bridge.inspect("{{.State.ExitCode}}") == "0", bridge.logs()


class OwnNats:
    """A nats-server with JetStream of this test's own, which it can stop and start again."""

    def __init__(self, store: Path) -> None:
        self.store, self.port = store, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [find_tool("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen([*args, "-sd", str(self.store)])

        async def up() -> None:
            nc = await nats.connect(self.url, connect_timeout=1, max_reconnect_attempts=0)
            await nc.close()

        wait_for(lambda: _ok(lambda: asyncio.run(up())), timeout=30, what="own nats-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _ok(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:
        return False
    return True


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    server = OwnNats(tmp_path / "jetstream")
    yield server
    server.stop()


def test_buffered_messages_survive_a_new_container_on_the_same_volume(
    amqp_url: str, own_nats: OwnNats, containers: Any
) -> None:
    """Target down, messages buffered, container replaced, target back: nothing lost."""
    tag = uuid.uuid4().hex[:8]
    count = 500
    own_nats.start()
    connections = {
        "rabbit": {"kind": "amqp", "url": amqp_url},
        "sink": {"kind": "nats", "servers": [own_nats.url]},
    }
    config = bridge_config(tag, connections, [amqp_to_jetstream(tag, "sink")])
    config["bridge"]["drain_timeout"] = "3s"
    first = containers(config)
    first.start()
    first.wait("/readyz")
    own_nats.stop()
    orders = [f"b{i}" for i in range(count)]
    publish(amqp_url, f"ct-{tag}", orders)

    def buffered() -> int:
        return int(first.routes()["orders-to-js"]["buffer"]["depth"])

    wait_for(lambda: buffered() == count, what=f"{count} messages in the buffer")
    assert first.routes()["orders-to-js"]["counters"]["delivered"] == 0
    first.podman("stop", first.name)
    assert first.inspect("{{.State.ExitCode}}") == "0", first.logs()
    first.remove()

    second = containers(config, volume=first.volume)
    second.start()
    own_nats.start()
    second.wait("/readyz")
    stream = f"CT_{tag}"
    wait_for(
        lambda: asyncio.run(stream_count(own_nats.url, stream)) >= count,
        what="buffered messages delivered",
    )
    assert sorted(set(stored(own_nats.url, stream))) == sorted(orders), "messages lost"
    assert second.routes()["orders-to-js"]["buffer"]["depth"] == 0
