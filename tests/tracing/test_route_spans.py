"""A buffered route's hooks, wired: every message's deliver span ends once, at its confirm
after any resends or at its dead letter, and the sink sends that span's traceparent."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from natsbridge.bridge import tracing
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost, MessageRejected
from tests.runtime.test_route import COUNT, ScriptedSink, run_route, sent_order


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
