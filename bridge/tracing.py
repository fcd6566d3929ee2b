"""OpenTelemetry spans for each message's hops through a route (`bridge.tracing`).

Three spans per message and route, each the child of the one before:

``ingest ROUTE``   the source's message mapped (a child of its incoming W3C ``traceparent``,
                   or the root of a new trace when it has none); ends before the buffer
``buffer ROUTE``   from the buffer's append until delivery takes the message
``deliver ROUTE``  from the first send until the destination confirmed it (resends are
                   events on it), or until it was dead-lettered (an error span)

A route without a buffer (at_most_once) has no buffer span: its deliver span is the child of
its ingest span. A request/reply route has its ingest span only.

The ingest span's context is written into the mapped message's ``traceparent`` /
``tracestate`` headers, so it is stored in the buffer with the message: after a restart the
buffer span still links to it. The outgoing message carries the deliver span's context in
the same headers, which every connector's header mapping carries in its protocol's form.

Off (no `bridge.tracing`, the default) a route's `RouteTracing` costs one branch per call and
headers pass through unchanged. The opentelemetry packages are the `tracing` extra, imported
only when tracing is on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from natsbridge.bridge.envelope import Envelope, Headers

if TYPE_CHECKING:
    from natsbridge.bridge.config.model import Tracing
    from natsbridge.bridge.runtime.buffer import Buffered

log = logging.getLogger("natsbridge")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACER_NAME = "natsbridge"

_tracer: Any = None  # an opentelemetry Tracer while tracing is on, else None
_propagator: Any = None  # its W3C trace-context propagator


class RouteTracing:
    """One route's hooks: `ingest` around the mapping; `deliver` at a message's first send,
    `settled` with each send's outcomes and `dead_lettered` end its deliver span."""

    __slots__ = ("_delivering", "_route", "_tracer")

    def __init__(self, route: str) -> None:
        self._route = route
        self._tracer = _tracer
        self._delivering: dict[int, Any] = {}  # buffer seq -> its open deliver span

    def ingest(self, envelope: Envelope, mapping: Callable[[Envelope], Envelope]) -> Envelope:
        """`mapping(envelope)`, traced: the result carries the ingest span's context."""
        tracer = self._tracer
        if tracer is None:
            return mapping(envelope)
        from opentelemetry import trace

        span = tracer.start_span(
            f"ingest {self._route}",
            context=_extract(envelope.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes=_attributes(self._route, envelope),
        )
        try:
            mapped = mapping(envelope)
        except Exception as exc:
            _failed(span, exc)
            span.end()
            raise
        _inject(mapped.headers, span)
        span.end()
        return mapped

    def deliver(self, items: Sequence[Buffered]) -> None:
        """Record each message's buffer span, open its deliver span and write that span's
        context into its headers (taken from the buffer: this is its first send)."""
        tracer = self._tracer
        if tracer is None:
            return
        from opentelemetry import trace

        now = time.time_ns()
        for item in items:
            envelope = item.envelope
            buffered = tracer.start_span(
                f"buffer {self._route}",
                context=_extract(envelope.headers),
                start_time=min(int(item.buffered_at * 1e9), now) if item.buffered_at else now,
                attributes={"natsbridge.route": self._route, "natsbridge.seq": item.seq},
            )
            buffered.end(end_time=now)
            delivering = tracer.start_span(
                f"deliver {self._route}",
                context=trace.set_span_in_context(buffered),
                kind=trace.SpanKind.PRODUCER,
                start_time=now,
                attributes=_attributes(self._route, envelope),
            )
            _inject(envelope.headers, delivering)
            earlier = self._delivering.pop(item.seq, None)
            if earlier is not None:  # the route restarted before its send was settled
                _ended(earlier, "taken again from the buffer")
            self._delivering[item.seq] = delivering

    async def send(self, envelope: Envelope, send: Callable[[Envelope], Awaitable[None]]) -> None:
        """`send(envelope)` on a route without a buffer (at_most_once), as its deliver span."""
        tracer = self._tracer
        if tracer is None:
            return await send(envelope)
        from opentelemetry import trace

        span = tracer.start_span(
            f"deliver {self._route}",
            context=_extract(envelope.headers),
            kind=trace.SpanKind.PRODUCER,
            attributes=_attributes(self._route, envelope),
        )
        _inject(envelope.headers, span)
        try:
            await send(envelope)
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()

    def settled(self, items: Sequence[Buffered], results: Sequence[BaseException | None]) -> None:
        """A send's outcomes: a confirm ends the deliver span; a failure is an event on it."""
        if self._tracer is None:
            return
        for item, result in zip(items, results, strict=True):
            span = self._delivering.get(item.seq)
            if span is None:
                continue
            if result is None:
                del self._delivering[item.seq]
                span.end()
            else:
                span.add_event("send failed", {"reason": f"{type(result).__name__}: {result}"})

    def dead_lettered(self, item: Buffered, reason: str) -> None:
        """End the deliver span of a message moved to the dead letters, as an error."""
        if self._tracer is None:
            return
        span = self._delivering.pop(item.seq, None)
        if span is not None:
            _ended(span, f"dead-lettered: {reason}")


def _ended(span: Any, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))
    span.end()


def _attributes(route: str, envelope: Envelope) -> dict[str, str]:
    return {"natsbridge.route": route, "messaging.destination.name": envelope.subject}


def _failed(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _extract(headers: Headers) -> Any:
    """The context of the incoming W3C trace headers (empty when there are none)."""
    carrier = {name: headers[name][0] for name in (TRACEPARENT, TRACESTATE) if headers.get(name)}
    return _propagator.extract(carrier)


def _inject(headers: Headers, span: Any) -> None:
    """Replace the W3C trace headers with `span`'s context (W3C trace-context, version 00)."""
    context = span.get_span_context()
    headers[TRACEPARENT] = [
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    ]
    state = context.trace_state.to_header()
    if state:
        headers[TRACESTATE] = [state]
    else:
        headers.pop(TRACESTATE, None)


# ---------------------------------------------------------------- process-wide set-up


def start(settings: Tracing | None) -> Callable[[], None]:
    """Turn tracing on as `settings` say (nothing when None); returns what turns it off.

    Routes built from then on trace; spans go out in batches on the SDK's thread.
    """
    if settings is None:
        return lambda: None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    log.info(
        "tracing on: %s exporter%s",
        settings.exporter,
        f" to {settings.endpoint}" if settings.endpoint else "",
        extra={"event": "tracing_started"},
    )
    return _install(provider)


def _exporter(settings: Tracing) -> Any:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout)  # its default is the stdout of its import
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
    return OTLPSpanExporter(endpoint=settings.endpoint, headers=headers or None)


def _install(provider: Any) -> Callable[[], None]:
    global _tracer, _propagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
    _tracer = provider.get_tracer(TRACER_NAME)

    def stop() -> None:
        global _tracer
        _tracer = None
        provider.shutdown()  # exports what is still batched

    return stop


@contextmanager
def traced_by(provider: Any) -> Iterator[None]:
    """Trace with `provider` (a TracerProvider, with an in-memory exporter in tests)."""
    stop = _install(provider)
    try:
        yield
    finally:
        stop()
