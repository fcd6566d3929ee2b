"""A trace across two routes of one bridge, RabbitMQ -> NATS -> Kafka, on the real brokers.

The bridge runs in this process so that the SDK's in-memory exporter sees its spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from natsbridge.bridge import tracing
from natsbridge.bridge.config.loader import load_config
from natsbridge.bridge.runtime.bridge import Bridge
from tests.e2e.bridge_process import write_config
from tests.e2e.test_kafka_bridge import create_topic, read_topic

pytestmark = [pytest.mark.amqp, pytest.mark.nats, pytest.mark.kafka]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACESTATE = "vendor=opaque"
WAIT_S = 60.0


@pytest.fixture
def chain(
    tmp_path: Path, amqp_url: str, nats_url: str, kafka_bootstrap: str
) -> Iterator[dict[str, str]]:
    """Two routes: queue -> JetStream stream -> Kafka topic; a message waits in the queue."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "queue": f"trace-{tag}",
        "stream": f"TRACE_{tag}",
        "subject": f"trace.{tag}",
        "topic": f"trace-{tag}",
    }
    create_topic(kafka_bootstrap, names["topic"], partitions=1)
    config = {
        "version": 1,
        "bridge": {"id": f"trace-{tag}", "data_dir": str(tmp_path / "data")},
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
        },
        "routes": [
            {
                "name": "rabbit-to-nats",
                "from": {"connection": "rabbit", "queue": names["queue"]},
                "to": {
                    "connection": "nats",
                    "subject": names["subject"],
                    "jetstream": {"stream": names["stream"]},
                },
            },
            {
                "name": "nats-to-kafka",
                "from": {
                    "connection": "nats",
                    "subject": names["subject"],
                    "jetstream": {"stream": names["stream"]},
                },
                "to": {"connection": "kafka", "topic": names["topic"]},
            },
        ],
    }
    names["config"] = str(write_config(tmp_path / "bridge.yaml", config))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(names["queue"], durable=True)
    channel.basic_publish(
        "",
        names["queue"],
        b"order 1",
        pika.BasicProperties(
            delivery_mode=2, headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
        ),
    )
    try:
        yield names
    finally:
        channel.queue_delete(names["queue"])
        connection.close()
        asyncio.run(_delete_stream(nats_url, names["stream"]))


async def _delete_stream(nats_url: str, stream: str) -> None:
    client = await nats.connect(nats_url)
    with contextlib.suppress(Exception):
        await client.jetstream().delete_stream(stream)
    await client.close()


def _bridge_until_delivered(config: str, kafka_bootstrap: str, topic: str) -> list[Any]:
    """Run the bridge until the message reached Kafka; its Kafka records."""
    bridge = Bridge(load_config(config))

    async def run() -> list[Any]:
        running = asyncio.create_task(bridge.run())
        records: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while not records and time.monotonic() < deadline and not running.done():
            await asyncio.sleep(0.5)
            records = await asyncio.to_thread(read_topic, kafka_bootstrap, topic)
        bridge.stop()
        await running
        return records

    return asyncio.run(run())


def _header(record: Any, name: str) -> str | None:
    return next((v.decode() for k, v in record.headers if k == name), None)


def test_two_hops_are_six_spans_of_the_incoming_trace(
    chain: dict[str, str], kafka_bootstrap: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.traced_by(provider):
        records = _bridge_until_delivered(chain["config"], kafka_bootstrap, chain["topic"])
    assert [r.value for r in records] == [b"order 1"]
    spans: dict[str, ReadableSpan] = {span.name: span for span in exporter.get_finished_spans()}
    hops = [
        f"{hop} {route}"
        for route in ("rabbit-to-nats", "nats-to-kafka")
        for hop in ("ingest", "buffer", "deliver")
    ]
    assert sorted(spans) == sorted(hops)
    parent_id = int(PARENT_ID, 16)
    for name in hops:  # one chain: each hop the child of the one before
        context = spans[name].context
        parent = spans[name].parent
        assert context is not None and parent is not None
        assert f"{context.trace_id:032x}" == TRACE_ID, name
        assert parent.span_id == parent_id, name
        assert context.trace_state.get("vendor") == "opaque", name
        assert spans[name].status.is_ok, name
        parent_id = context.span_id
    last = spans["deliver nats-to-kafka"].context
    assert last is not None
    assert _header(records[0], "traceparent") == f"00-{TRACE_ID}-{last.span_id:016x}-01"
    assert _header(records[0], "tracestate") == TRACESTATE


def test_without_tracing_traceparent_passes_unchanged(
    chain: dict[str, str], kafka_bootstrap: str
) -> None:
    records = _bridge_until_delivered(chain["config"], kafka_bootstrap, chain["topic"])
    assert [r.value for r in records] == [b"order 1"]
    assert _header(records[0], "traceparent") == TRACEPARENT
    assert _header(records[0], "tracestate") == TRACESTATE
