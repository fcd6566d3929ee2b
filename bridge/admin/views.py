"""What the admin endpoint shows: route views, readiness and Prometheus metric families.

Read at request time from each route's RouteStats, so the hot path pays nothing for
observability beyond incrementing plain integers.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from natsbridge import __version__
from natsbridge.bridge.config.describe import describe_sink, describe_source
from natsbridge.bridge.runtime.route import RouteRunner
from natsbridge.bridge.runtime.stats import LATENCY_BUCKETS_S, RouteState


def is_ready(runner: RouteRunner) -> bool:
    """A route is ready when it runs with both ends connected."""
    stats = runner.stats
    return stats.state is RouteState.RUNNING and stats.source_connected and stats.sink_connected


def route_view(runner: RouteRunner) -> dict[str, Any]:
    """The JSON view of one route (`/api/routes`, `natsbridge status`)."""
    route, stats = runner.route, runner.stats
    # An operator's pause shows while the route otherwise runs; trouble shows first.
    paused = stats.paused and stats.state is RouteState.RUNNING
    return {
        "name": route.name,
        "state": "paused" if paused else stats.state.value,
        "ready": is_ready(runner),
        "paused": stats.paused,
        "started_at": stats.started_at,
        "delivery": route.spec.delivery.value,
        "request_reply": route.spec.request_reply is not None,
        "source": {
            "connection": route.source.connection,
            "kind": route.source_kind,
            "address": describe_source(route.source, route.source_kind),
            "connected": stats.source_connected,
        },
        "sink": {
            "connection": route.sink.connection,
            "kind": route.sink_kind,
            "address": describe_sink(route.sink, route.sink_kind),
            "connected": stats.sink_connected,
        },
        "counters": {
            "received": stats.received,
            "received_bytes": stats.received_bytes,
            "buffered": stats.buffered,
            "acked": stats.acked,
            "delivered": stats.delivered,
            "delivered_bytes": stats.delivered_bytes,
            "dead_lettered": dict(stats.dead_lettered),
            "looped": stats.looped,
            "dropped": stats.dropped,
            "retries": stats.retries,
            "reconnects": stats.reconnects,
            "redelivered": stats.redelivered,
        },
        "in_flight": stats.in_flight,
        "buffer": {
            "depth": stats.buffer_depth,
            "oldest_age_s": stats.buffer_oldest_age,
            "bytes": stats.buffer_bytes,
        },
        "rates": {
            "in_per_s": round(stats.rate_in, 1),
            "out_per_s": round(stats.rate_out, 1),
            "in_avg_per_s": round(stats.rate_in_avg, 1),
            "out_avg_per_s": round(stats.rate_out_avg, 1),
        },
        "last_error": (
            {"message": stats.last_error, "at": stats.last_error_at} if stats.last_error else None
        ),
    }


class BuildInfo(Collector):
    """`natsbridge_build_info{version, python} 1`: which build answers."""

    def collect(self) -> Iterable[Metric]:
        """The one sample."""
        info = GaugeMetricFamily(
            "natsbridge_build_info",
            "Always 1; the labels name the natsbridge and Python versions",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


class RouteCollector(Collector):
    """Prometheus metrics of every route, built from their stats at scrape time."""

    def __init__(self, runners: Callable[[], Sequence[RouteRunner]]) -> None:
        self.runners = runners  # the routes running now (a reload replaces them)

    def collect(self) -> Iterable[Metric]:
        """Every natsbridge_* metric family."""
        runners = self.runners()
        yield from _counters(runners)
        yield from _gauges(runners)
        latency = HistogramMetricFamily(
            "natsbridge_latency_seconds",
            "End-to-end latency from the source's timestamp to the destination's confirm",
            labels=["route"],
        )
        for runner in runners:
            histogram = runner.stats.latency
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*LATENCY_BUCKETS_S, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            latency.add_metric([runner.route.name], buckets, histogram.total)
        yield latency


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def _counters(runners: Sequence[RouteRunner]) -> Iterator[Metric]:
    directional = [
        (
            "natsbridge_messages",
            "Messages read from the source (in) or confirmed by the sink (out)",
        ),
        ("natsbridge_bytes", "Payload bytes read from the source (in) or confirmed (out)"),
    ]
    families = {
        name: CounterMetricFamily(name, text, labels=["route", "connection", "direction"])
        for name, text in directional
    }
    simple = {
        "natsbridge_buffered": "Messages committed to the durable buffer",
        "natsbridge_acks": "Source messages acknowledged",
        "natsbridge_redeliveries": "Buffered messages handed out again after a restart",
        "natsbridge_retries": "Sends or buffer writes retried after a retryable error",
        "natsbridge_reconnects": "Reconnects of the route's source or sink",
        "natsbridge_looped": "Messages dropped by loop prevention",
        "natsbridge_dropped": "at_most_once messages the destination did not take",
    }
    simple_families = {
        name: CounterMetricFamily(name, text, labels=["route"]) for name, text in simple.items()
    }
    dead = CounterMetricFamily(
        "natsbridge_dead_lettered",
        "Messages dead-lettered, by reason (the error's type, or poison)",
        labels=["route", "reason"],
    )
    for runner in runners:
        route, stats = runner.route, runner.stats
        name = route.name
        source, sink = route.source.connection, route.sink.connection
        families["natsbridge_messages"].add_metric([name, source, "in"], stats.received)
        families["natsbridge_messages"].add_metric([name, sink, "out"], stats.delivered)
        families["natsbridge_bytes"].add_metric([name, source, "in"], stats.received_bytes)
        families["natsbridge_bytes"].add_metric([name, sink, "out"], stats.delivered_bytes)
        values = {
            "natsbridge_buffered": stats.buffered,
            "natsbridge_acks": stats.acked,
            "natsbridge_redeliveries": stats.redelivered,
            "natsbridge_retries": stats.retries,
            "natsbridge_reconnects": stats.reconnects,
            "natsbridge_looped": stats.looped,
            "natsbridge_dropped": stats.dropped,
        }
        for metric, value in values.items():
            simple_families[metric].add_metric([name], value)
        for reason, count in dict(stats.dead_lettered).items():
            dead.add_metric([name, reason], count)
    yield from families.values()
    yield from simple_families.values()
    yield dead


def _gauges(runners: Sequence[RouteRunner]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "natsbridge_route_up", "1 when the route runs with both ends connected", labels=["route"]
    )
    depth = GaugeMetricFamily(
        "natsbridge_buffer_depth", "Buffered messages not yet confirmed", labels=["route"]
    )
    size = GaugeMetricFamily(
        "natsbridge_buffer_bytes", "Bytes the route's buffer holds on disk", labels=["route"]
    )
    age = GaugeMetricFamily(
        "natsbridge_buffer_oldest_age_seconds",
        "Age of the oldest unconfirmed buffered message",
        labels=["route"],
    )
    in_flight = GaugeMetricFamily(
        "natsbridge_in_flight", "Messages being sent right now", labels=["route"]
    )
    paused = GaugeMetricFamily(
        "natsbridge_route_paused",
        "1 while an operator paused the route (its source is not read)",
        labels=["route"],
    )
    connected = GaugeMetricFamily(
        "natsbridge_connected",
        "1 while the connection is up",
        labels=["route", "connection", "direction"],
    )
    for runner in runners:
        name, stats = runner.route.name, runner.stats
        up.add_metric([name], 1.0 if is_ready(runner) else 0.0)
        depth.add_metric([name], stats.buffer_depth)
        size.add_metric([name], stats.buffer_bytes)
        age.add_metric([name], stats.buffer_oldest_age or 0.0)
        in_flight.add_metric([name], stats.in_flight)
        paused.add_metric([name], float(stats.paused))
        connected.add_metric(
            [name, runner.route.source.connection, "in"], float(stats.source_connected)
        )
        connected.add_metric(
            [name, runner.route.sink.connection, "out"], float(stats.sink_connected)
        )
    yield from (up, depth, size, age, in_flight, paused, connected)
