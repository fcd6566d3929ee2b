"""The tracing hooks of a route, the buffer between them, and the `bridge.tracing` section."""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from natsbridge.bridge import tracing
from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.model import Tracing
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConfigError, ConnectionLost, PermanentError
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers
from natsbridge.bridge.tracing import RouteTracing

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.traced_by(provider):
        yield exporter


def _incoming() -> Envelope:
    return Envelope("orders", b"{}", {"traceparent": [TRACEPARENT], "tracestate": ["a=1"]})


def _mapped(envelope: Envelope) -> Envelope:
    return Envelope("nats.orders", envelope.payload, dict(envelope.headers))


def _span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def test_off_the_hooks_change_nothing() -> None:
    route = RouteTracing("r")
    mapped = route.ingest(_incoming(), _mapped)
    assert mapped.headers == _incoming().headers
    item = Buffered(1, mapped, 1, time.time())
    route.deliver([item])
    route.settled([item], [None])
    route.dead_lettered(item, "refused")
    assert item.envelope.headers == _incoming().headers


def test_the_ingest_context_survives_a_restart_of_the_buffer(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """The buffer span, started by the next process, is the child of the ingest span."""
    route = load_config(EXAMPLES / "rabbitmq-nats.yaml", {}).routes[0]
    mapped = RouteTracing(route.name).ingest(_incoming(), _mapped)

    async def put_then_take_after_reopening() -> Buffered:
        buffers = EmbeddedBuffers(tmp_path)
        await buffers.open()
        await (await buffers.route(route)).put([mapped])
        await buffers.close()
        buffers = EmbeddedBuffers(tmp_path)
        await buffers.open()
        try:
            [item] = await (await buffers.route(route)).take(10, 5.0)
            return item
        finally:
            await buffers.close()

    before = time.time()
    item = asyncio.run(put_then_take_after_reopening())
    assert before <= item.buffered_at <= time.time()  # the append, stored in the buffer
    delivering = RouteTracing(route.name)
    delivering.deliver([item])
    delivering.settled([item], [None])
    ingest, buffer, deliver = exporter.get_finished_spans()
    assert [ingest.name, buffer.name, deliver.name] == [
        f"{hop} {route.name}" for hop in ("ingest", "buffer", "deliver")
    ]
    assert buffer.parent is not None and f"{buffer.parent.span_id:016x}" == _span_id(ingest)
    assert buffer.start_time == int(item.buffered_at * 1e9)
    assert deliver.parent is not None and deliver.parent.span_id == int(_span_id(buffer), 16)
    assert item.envelope.headers["traceparent"] == [f"00-{TRACE_ID}-{_span_id(deliver)}-01"]
    assert item.envelope.headers["tracestate"] == ["a=1"]


def test_deliver_spans_end_at_the_confirm_after_resends_or_at_the_dead_letter(
    exporter: InMemorySpanExporter,
) -> None:
    route = RouteTracing("r")

    def broken(envelope: Envelope) -> Envelope:
        raise PermanentError("no such field")

    with pytest.raises(PermanentError):
        route.ingest(_incoming(), broken)
    first, second = (Buffered(seq, _mapped(_incoming()), 1, time.time()) for seq in (1, 2))
    route.deliver([first, second])
    route.settled([first, second], [ConnectionLost("gone"), ConnectionLost("gone")])
    route.settled([first], [None])  # the resend went through
    route.settled([second], [PermanentError("message too large")])
    route.dead_lettered(second, "PermanentError: message too large")
    spans = [span for span in exporter.get_finished_spans() if span.name != "buffer r"]
    assert [
        (span.name, span.status.status_code, span.status.description, len(span.events))
        for span in spans
    ] == [
        ("ingest r", StatusCode.ERROR, "PermanentError: no such field", 0),
        ("deliver r", StatusCode.UNSET, None, 1),
        ("deliver r", StatusCode.ERROR, "dead-lettered: PermanentError: message too large", 2),
    ]
    assert spans[2].events[1].attributes == {"reason": "PermanentError: message too large"}


def test_a_message_without_traceparent_starts_a_trace(exporter: InMemorySpanExporter) -> None:
    mapped = RouteTracing("r").ingest(Envelope("orders", b""), _mapped)
    [span] = exporter.get_finished_spans()
    assert span.parent is None
    assert mapped.headers["traceparent"][0].split("-")[2] == _span_id(span)


def _config(tmp_path: Path, tracing_section: str) -> Path:
    text = (EXAMPLES / "rabbitmq-nats.yaml").read_text()
    text = text.replace("bridge:\n", f"bridge:\n  tracing: {tracing_section}\n", 1)
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_without_the_extra_the_config_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as raised:
        load_config(path := _config(tmp_path, "{exporter: console}"), {})
    line = path.read_text().splitlines().index("  tracing: {exporter: console}") + 1
    assert str(raised.value) == (
        f"{path}:{line}:3: bridge.tracing: needs the tracing extra: "
        "pip install 'natsbridge[tracing]'"
    )


def test_an_endpoint_is_for_the_otlp_exporter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`endpoint` and `headers` are for the otlp exporter"):
        load_config(_config(tmp_path, "{exporter: console, endpoint: 'http://x:4318'}"), {})
    config = load_config(_config(tmp_path, "{endpoint: 'https://collector:4318/v1/traces'}"), {})
    assert config.bridge.tracing == Tracing(endpoint="https://collector:4318/v1/traces")


def test_the_console_exporter_prints_the_spans(capsys: pytest.CaptureFixture[str]) -> None:
    stop = tracing.start(Tracing(exporter="console"))
    try:
        RouteTracing("r").ingest(_incoming(), _mapped)
    finally:
        stop()
    span = json.loads(capsys.readouterr().out)
    assert (span["name"], span["context"]["trace_id"]) == ("ingest r", f"0x{TRACE_ID}")


def test_the_otlp_exporter_posts_the_spans_with_its_headers() -> None:
    """A stand-in collector: spans arrive as OTLP protobuf, with the configured headers."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[tuple[str, dict[str, str], bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Tracing.model_validate(
            {
                "endpoint": f"http://127.0.0.1:{server.server_port}/v1/traces",
                "headers": {"authorization": "Bearer s3cret"},
                "service_name": "bridge-dc1",
            }
        )
        stop = tracing.start(settings)
        RouteTracing("r").ingest(_incoming(), _mapped)
        stop()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    [(path, headers, body)] = received
    assert path == "/v1/traces"
    assert headers["authorization"] == "Bearer s3cret"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "bridge-dc1"
    [span] = resource.scope_spans[0].spans
    assert (span.name, span.trace_id.hex()) == ("ingest r", TRACE_ID)
