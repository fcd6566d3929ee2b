"""A buffered route's hooks, wired: every message's deliver span ends once, at its confirm
after any resends or at its dead letter, and the sink sends that span's traceparent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from natsbridge.bridge import tracing
from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost, MessageRejected
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.route import RouteRunner
from tests.runtime.test_route import COUNT, MemorySource, ScriptedSink, run_route, sent_order


class RecordingSink(ScriptedSink):
    """Records the traceparent of each message it confirms."""

    def __init__(self, fail: dict[bytes, BaseException]) -> None:
        super().__init__(fail)
        self.traceparents: dict[bytes, str] = {}

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        results = await super().send_batch(envelopes)
        for envelope, result in zip(envelopes, results, strict=True):
            if result is None:
                self.traceparents[envelope.payload] = envelope.headers["traceparent"][0]
        return results


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.traced_by(provider):
        yield exporter


def test_resends_and_dead_letters_end_each_deliver_span_once(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    lost = (5, 6, 40)
    fail: dict[bytes, BaseException] = {sent_order(n): ConnectionLost("gone") for n in lost}
    fail[sent_order(17)] = MessageRejected("no such queue")
    sink = RecordingSink(fail)
    _, buffer, _, _ = run_route(tmp_path, 8, {}, sink=sink)
    assert len(buffer.settled) == COUNT - 1
    spans = exporter.get_finished_spans()
    # MemoryBuffer numbers the messages from 1: seq n carries payload n - 1
    payload_of = {
        span.context.span_id: sent_order(span.attributes["natsbridge.seq"] - 1)
        for span in spans
        if span.name == "buffer r" and span.context and span.attributes
    }
    delivers = [span for span in spans if span.name == "deliver r"]
    assert len(delivers) == len(payload_of) == COUNT  # one each, ended once
    by_payload = {payload_of[span.parent.span_id]: span for span in delivers if span.parent}
    rejected = by_payload[sent_order(17)]
    assert rejected.status.status_code is StatusCode.ERROR
    assert rejected.status.description == "dead-lettered: MessageRejected: no such queue"
    for n in lost:
        assert [event.name for event in by_payload[sent_order(n)].events] == ["send failed"]
    assert len(sink.traceparents) == COUNT - 1
    for payload, traceparent in sink.traceparents.items():
        span = by_payload[payload]
        assert span.status.status_code is StatusCode.UNSET and span.context is not None
        assert traceparent.split("-")[2] == f"{span.context.span_id:016x}"


def test_an_at_most_once_route_traces_ingest_then_deliver(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """No buffer: the deliver span is the ingest span's child; a refused send is an error."""
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections: {nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}}\n"
        "routes:\n"
        "  - {name: r, from: {connection: nats, subject: 'in.>'},\n"
        "     to: {connection: nats, subject: out}, delivery: at_most_once}\n"
    )
    config = load_config(path, {})
    [route] = config.routes
    source = MemorySource(20)
    sink = RecordingSink({sent_order(7): MessageRejected("no such queue")})
    mapper = RouteMapper(route, config.bridge, config.connections["nats"])
    runner = RouteRunner(route, source, sink, mapper, None)

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        while runner.stats.delivered + runner.stats.dropped < 20:
            await asyncio.sleep(0.005)
        runner.stop()
        await asyncio.wait_for(running, 10)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    spans = exporter.get_finished_spans()
    ingests = {span.context.span_id: span for span in spans if span.name == "ingest r"}
    delivers = [span for span in spans if span.name == "deliver r"]
    assert len(ingests) == len(delivers) == 20
    assert all(span.parent and span.parent.span_id in ingests for span in delivers)
    failed = [span for span in delivers if span.status.status_code is StatusCode.ERROR]
    assert [span.status.description for span in failed] == ["MessageRejected: no such queue"]
    sent = {f"{span.context.span_id:016x}" for span in delivers if span not in failed}
    assert {tp.split("-")[2] for tp in sink.traceparents.values()} == sent
