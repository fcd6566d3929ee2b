"""One-line, human descriptions of routes and endpoints, for the CLI and logs."""

from __future__ import annotations

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import Endpoint
from natsbridge.bridge.registry import load_connector


def describe_source(source: Endpoint, kind: str) -> str:
    """Where a source of `kind` reads, as `connection:address`."""
    return f"{source.connection}:{load_connector(kind).describe_source(source)}"


def describe_sink(sink: Endpoint, kind: str) -> str:
    """Where a sink of `kind` writes, as `connection:address`."""
    return f"{sink.connection}:{load_connector(kind).describe_sink(sink)}"


def describe_route(route: Route) -> str:
    """`name: source -> sink (delivery[, request/reply][, dead letters -> sink])`."""
    extra = ", request/reply" if route.spec.request_reply else ""
    if route.dead_letters is not None:
        target = route.dead_letters
        extra += f", dead letters -> {describe_sink(target.sink, target.sink_kind)}"
    source = describe_source(route.source, route.source_kind)
    sink = describe_sink(route.sink, route.sink_kind)
    return f"{route.name}: {source} -> {sink} ({route.spec.delivery.value}{extra})"
