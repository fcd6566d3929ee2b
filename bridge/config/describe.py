"""One-line, human descriptions of routes and endpoints, for the CLI and logs."""

from __future__ import annotations

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import (
    AmqpSink,
    AmqpSource,
    KafkaSink,
    KafkaSource,
    NatsSink,
    NatsSource,
    Sink,
    Source,
    StompSink,
    StompSource,
)


def describe_source(source: Source) -> str:
    """Where a source reads, as `connection:address`."""
    match source:
        case AmqpSource(queue=str(queue)):
            where = f"queue {queue}"
        case AmqpSource():
            where = f"exchange {source.exchange} {','.join(source.binding_keys)}"
        case KafkaSource():
            where = (
                f"topics {','.join(source.topics or [])}"
                if source.topics
                else (f"topics /{source.topic_pattern}/")
            )
        case StompSource():
            where = source.destination
        case NatsSource(jetstream=None):
            where = f"subject {source.subject}"
        case NatsSource():
            assert source.jetstream is not None
            where = f"stream {source.jetstream.stream} subject {source.subject}"
    return f"{source.connection}:{where}"


def describe_sink(sink: Sink) -> str:
    """Where a sink writes, as `connection:address`."""
    match sink:
        case AmqpSink():
            where = f"exchange {sink.exchange or '(default)'} key {sink.routing_key}"
        case KafkaSink():
            where = f"topic {sink.topic}" + (f" key {sink.key}" if sink.key else "")
        case StompSink():
            where = sink.destination
        case NatsSink(jetstream=None):
            where = f"subject {sink.subject}"
        case NatsSink():
            assert sink.jetstream is not None
            where = f"stream {sink.jetstream.stream} subject {sink.subject}"
    return f"{sink.connection}:{where}"


def describe_route(route: Route) -> str:
    """`name: source -> sink (delivery[, request/reply])`."""
    extra = ", request/reply" if route.spec.request_reply else ""
    return (
        f"{route.name}: {describe_source(route.source)} -> {describe_sink(route.sink)} "
        f"({route.spec.delivery.value}{extra})"
    )
