"""SIGTERM's drain as an operator sees it: progress in the log, and no wait when nothing can move.

The route's sink refuses for good (its JetStream stream is missing and must not be
created). `drain_timeout` and `retry.max` are far longer than the test waits for the
exit: a bridge that waited for either would fail it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.rabbitmq_admin import delete_queues
from tests.e2e.test_rabbitmq_bridge import wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

LONG = "600s"  # drain_timeout and retry.max: far beyond the exit's bound below
EXIT_BOUND_S = 60


@pytest.fixture
def tag() -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)


def stuck_config(tag: str, amqp_url: str, nats_url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {
            "id": f"drain-{tag}",
            "data_dir": "${env:NATSBRIDGE_DATA_DIR}",
            "drain_timeout": LONG,
        },
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"stuck-{tag}",
                "from": {"connection": "rabbit", "exchange": f"stuck-{tag}"},
                "to": {
                    "connection": "nats",
                    "subject": f"stuck{tag}.x",
                    "jetstream": {"stream": f"MISSING_{tag}", "create": False},
                },
                "retry": {"max": LONG},
            }
        ],
    }


def events(bridge: BridgeProcess) -> list[dict[str, Any]]:
    """The JSON log records of the bridge's last start."""
    text = bridge.log.read_text().rsplit("---- start", 1)[-1]
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("buffered", [0, 300])
def test_sigterm_with_a_sink_refused_for_good_logs_counts_and_exits_at_once(
    amqp_url: str, nats_url: str, tag: str, tmp_path: Path, buffered: int
) -> None:
    config = write_config(tmp_path / "stuck.yaml", stuck_config(tag, amqp_url, nats_url))
    bridge = BridgeProcess(config, tmp_path / "data")
    route = f"stuck-{tag}"
    try:
        bridge.start(wait_ready=False)  # never ready: the sink is refused
        wait_for(lambda: bridge.get("/api/routes")[0] == 200, what="admin up")
        wait_for(
            lambda: any(e.get("event") == "connect_failed" for e in events(bridge)),
            what="the sink refused",
        )
        if buffered:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            channel = connection.channel()
            for i in range(buffered):
                channel.basic_publish(f"stuck-{tag}", "k", str(i).encode())
            connection.close()
            wait_for(
                lambda: bridge.routes()[route]["buffer"]["depth"] == buffered,
                what=f"{buffered} buffered",
            )
        assert bridge.terminate(timeout=EXIT_BOUND_S) == 0, bridge.tail()
    finally:
        bridge.stop()
    records = events(bridge)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record.get("event", ""), []).append(record)
    assert by_event["signal"][0]["signal"] == "SIGTERM"
    assert by_event["draining"][0]["routes"][route]["left"] == buffered, by_event["draining"]
    drained = by_event["drained"][-1]
    assert drained["routes"][route] == {"delivered": 0, "left": buffered}
    assert f"{buffered} left in the buffer" in drained["msg"]
    assert "drain_timeout" not in by_event
