"""A route's buffer, full or on a full disk, holds the source back and resumes by itself.

`natsbridge run` as a child process, RabbitMQ as the source, a NATS sink that is down
(nothing listens on its port) so that the buffer only fills. Counted: the messages are
in the buffer or still at RabbitMQ, never acked and dropped; `buffer_depth` says what
the buffer really holds, also right after a restart; and once a working sink is
configured every message arrives in JetStream.

The full disk is real: the data dir is on a small tmpfs of the test's own, next to a
filler file that the test deletes to free space (skipped where mounting is not allowed).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from natsbridge.bridge.broker.store import Store
from tests.broker.mounts import tmpfs
from tests.e2e.bridge_process import BridgeProcess, free_port, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.rabbitmq_admin import delete_queues
from tests.e2e.test_rabbitmq_bridge import wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

PAYLOAD = 4096


@pytest.fixture
def tag() -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)


def config(tag: str, amqp_url: str, nats_url: str, data_dir: Path, **route: Any) -> dict[str, Any]:
    """RabbitMQ queue -> JetStream; `nats_url` None: a NATS server that is down."""
    return {
        "version": 1,
        "bridge": {"id": f"buf-{tag}", "data_dir": str(data_dir), "drain_timeout": "2s"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"buf-{tag}",
                "from": {"connection": "rabbit", "queue": f"buf-{tag}"},
                "to": {
                    "connection": "nats",
                    "subject": f"buf.{tag}",
                    "jetstream": {"stream": f"BUF_{tag}"},
                },
                "max_in_flight": 20,
                "retry": {"initial": "100ms", "max": "1s"},
                **route,
            }
        ],
    }


def publish(amqp_url: str, queue: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True)
        for n in range(count):
            body = str(n).encode().ljust(PAYLOAD, b".")
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def stored(data_dir: Path, stream: str) -> int:
    """How many messages the route's buffer holds, read from the file itself."""
    with Store.open(data_dir, read_only=True) as store:
        return store.stream_info(stream).messages


def route_view(bridge: BridgeProcess, tag: str) -> dict[str, Any]:
    return bridge.routes()[f"buf-{tag}"]


def events(bridge: BridgeProcess, start: int) -> list[str]:
    """The `event` of every JSON log line of the bridge's `start`-th run."""
    text = bridge.log.read_text(errors="replace").split(f"---- start {start}\n")[1]
    text = text.split("\n---- start ")[0]
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line).get("event", ""))
    return found


def deliver_everything(
    tmp_path: Path, tag: str, amqp_url: str, nats_url: str, data_dir: Path, count: int
) -> None:
    """Restart with a working sink: every message arrives in JetStream, once."""
    path = write_config(tmp_path / "working.yaml", config(tag, amqp_url, nats_url, data_dir))
    bridge = BridgeProcess(path, tmp_path / "working-data")
    try:
        bridge.start()
        wait_for(
            lambda: asyncio.run(stream_count(nats_url, f"BUF_{tag}")) >= count,
            what="every message in JetStream",
        )
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
    assert asyncio.run(stream_count(nats_url, f"BUF_{tag}")) == count


def test_a_full_buffer_holds_the_source_back_and_the_gauge_tells(
    tmp_path: Path, tag: str, amqp_url: str, nats_url: str
) -> None:
    count, limit = 500, 100
    data_dir = tmp_path / "data"
    down = f"nats://127.0.0.1:{free_port()}"
    path = write_config(
        tmp_path / "down.yaml",
        config(tag, amqp_url, down, data_dir, buffer={"max_msgs": limit}),
    )
    bridge = BridgeProcess(path, tmp_path / "down-data")
    publish(amqp_url, f"buf-{tag}", count)
    try:
        bridge.start(wait_ready=False)
        wait_for(lambda: bridge.get("/api/routes")[0] == 200, what="the admin endpoint")
        wait_for(lambda: route_view(bridge, tag)["state"] == "paused", what="the route paused")
        in_buffer = stored(data_dir, f"buf-{tag}")
        # Full at `limit`; a batch (max_in_flight) begun below it went in whole.
        assert limit <= in_buffer < limit + 20
        wait_for(lambda: route_view(bridge, tag)["buffer"]["depth"] == in_buffer, what="gauge")
        assert route_view(bridge, tag)["counters"]["acked"] == in_buffer
        assert events(bridge, 1).count("buffer_held") == 1
        assert bridge.get("/readyz")[0] == 503
        assert bridge.terminate() == 0

        # After a restart, the gauge reads what the buffer holds from the start.
        bridge.start(wait_ready=False)
        wait_for(lambda: bridge.get("/api/routes")[0] == 200, what="the admin endpoint")
        assert route_view(bridge, tag)["buffer"]["depth"] == in_buffer
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
    assert stored(data_dir, f"buf-{tag}") == in_buffer  # nothing evicted to make room
    deliver_everything(tmp_path, tag, amqp_url, nats_url, data_dir, count)


def test_a_full_disk_pauses_the_route_and_it_resumes_by_itself(
    tmp_path: Path, tag: str, amqp_url: str, nats_url: str
) -> None:
    count = 1500  # 6 MB of payload: more than the 4 MiB left free at first
    down = f"nats://127.0.0.1:{free_port()}"
    with tmpfs(tmp_path / "mnt", "32m") as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 28 * 1024 * 1024)
        data_dir = mnt / "data"
        path = write_config(tmp_path / "down.yaml", config(tag, amqp_url, down, data_dir))
        bridge = BridgeProcess(path, tmp_path / "down-data")  # its log is off the tmpfs
        publish(amqp_url, f"buf-{tag}", count)
        try:
            bridge.start(wait_ready=False)
            wait_for(lambda: bridge.get("/api/routes")[0] == 200, what="the admin endpoint")
            wait_for(lambda: "buffer_unavailable" in events(bridge, 1), what="the disk to fill")
            wait_for(lambda: route_view(bridge, tag)["state"] == "paused", what="route paused")
            view = route_view(bridge, tag)
            assert "disk is full" in view["last_error"]["message"]
            full = stored(data_dir, f"buf-{tag}")
            assert 0 < full < count
            wait_for(lambda: route_view(bridge, tag)["buffer"]["depth"] == full, what="gauge")
            assert route_view(bridge, tag)["counters"]["acked"] == full

            filler.unlink()  # space returns: no restart, the route carries on
            wait_for(lambda: stored(data_dir, f"buf-{tag}") == count, what="all buffered")
            wait_for(lambda: route_view(bridge, tag)["buffer"]["depth"] == count, what="gauge")
            view = route_view(bridge, tag)
            assert view["state"] == "running" and view["counters"]["acked"] == count
            logged = events(bridge, 1)
            assert logged.count("buffer_unavailable") == 1, "one line per outage"
            assert logged.count("buffer_recovered") == 1
            assert logged.count("buffer_held") == logged.count("buffer_resumed") == 1
            assert bridge.terminate() == 0
        finally:
            bridge.stop()
        deliver_everything(tmp_path, tag, amqp_url, nats_url, data_dir, count)
