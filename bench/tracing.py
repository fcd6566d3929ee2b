"""Benchmark of the tracing hooks on one core: what each message pays, tracing off and on.

Run: ``python -m bench tracing`` (or ``python bench/tracing.py``). Prints one JSON object and
writes it to ``bench/results/tracing.json``.

Each leg runs a route's two hooks for a window of messages, as a route does: `ingest` around
the real mapping of an AMQP route (bridge.runtime.mapper), then `deliver` for the window and
its confirms (`settled`). Figures are CPU microseconds per message of
this process, the SDK's export thread included (median of several runs):

* ``no_hooks``: the mapping alone, the cost without any tracing code
* ``off``: no `bridge.tracing` (the default): one branch per hook
* ``on_sampled``: spans recorded, batched and handed to an exporter that drops them
* ``on_unsampled``: `sample_ratio: 0` and messages without traceparent (headers still set)
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from natsbridge.bridge import tracing
from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.tracing import RouteTracing

RESULT = Path(__file__).resolve().parent / "results" / "tracing.json"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rabbitmq-nats.yaml"
WINDOW = 500  # messages per ingest batch and delivery window
RUNS = 5
WINDOWS_PER_RUN = 40
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _window(route: RouteTracing, mapper: RouteMapper, incoming: Sequence[Envelope]) -> None:
    mapped = [route.ingest(envelope, mapper.map) for envelope in incoming]
    items = [Buffered(seq, envelope, 1, time.time()) for seq, envelope in enumerate(mapped)]
    route.deliver(items)
    route.settled(items, [None] * len(items))


def _no_hooks(mapper: RouteMapper, incoming: Sequence[Envelope]) -> None:
    mapped = [mapper.map(envelope) for envelope in incoming]
    [Buffered(seq, envelope, 1, time.time()) for seq, envelope in enumerate(mapped)]


def _us_per_message(work: Callable[[], None]) -> float:
    rates = []
    for _ in range(RUNS):
        cpu = time.process_time()
        for _ in range(WINDOWS_PER_RUN):
            work()
        rates.append((time.process_time() - cpu) / (WINDOWS_PER_RUN * WINDOW) * 1e6)
    return round(statistics.median(rates), 2)


def _messages(traceparent: bool) -> list[Envelope]:
    headers = {"traceparent": [TRACEPARENT]} if traceparent else {}
    return [Envelope("orders.eu", b"x" * 200, dict(headers)) for _ in range(WINDOW)]


def _traced_leg(sample_ratio: float, mapper: RouteMapper, incoming: list[Envelope]) -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=100_000))
    with tracing.traced_by(provider):
        route = RouteTracing("bench")
        return _us_per_message(lambda: _window(route, mapper, incoming))


def main(argv: Sequence[str] = ()) -> int:
    """Run the legs, print and write the report."""
    config = load_config(EXAMPLE, {})
    route = config.routes[0]
    mapper = RouteMapper(route, config.bridge, config.connections[route.sink.connection])
    traced = _messages(traceparent=True)
    legs = {
        "no_hooks": _us_per_message(lambda: _no_hooks(mapper, traced)),
        "off": _us_per_message(lambda: _window(RouteTracing("bench"), mapper, traced)),
        "on_sampled": _traced_leg(1.0, mapper, traced),
        "on_unsampled": _traced_leg(0.0, mapper, _messages(traceparent=False)),
    }
    report = {
        "name": "tracing",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "window": WINDOW,
        "cpu_us_per_message": legs,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
