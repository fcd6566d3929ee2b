"""`natsbridge map`: what a route would make of one source address, without any broker."""

from __future__ import annotations

from natsbridge.bridge.config.loader import Config, Route
from natsbridge.bridge.envelope import Envelope, Headers
from natsbridge.bridge.errors import MappingError
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.mapper import LoopDetected, RouteMapper
from natsbridge.mappings.templates import match_source


def preview(
    config: Config,
    route: Route,
    address: str,
    *,
    key: str | None = None,
    partition: int | None = None,
    headers: Headers | None = None,
) -> dict[str, object]:
    """`{"address": …, "key": …, "headers": {…}}` for a message from `address`.

    `address` is the source's native address: an AMQP routing key, a Kafka topic, a STOMP
    destination or a NATS subject (`partition`: a Kafka partition). Raises MappingError
    when the route would not take or could not map such a message.
    """
    for what, text in (("address", address), *_header_texts(headers or {})):
        if not _is_utf8(text):
            shown = text.encode("utf-8", "surrogateescape")  # the bytes as given on argv
            raise MappingError(f"the {what} {shown!r} is not UTF-8; only --key takes any bytes")
    source_kind = load_connector(route.source_kind)
    patterns = source_kind.source_patterns(route.source)
    if match_source(route.source_kind, patterns, address) is None:
        raise MappingError(
            f"{address!r} does not match route {route.name!r}'s source ({', '.join(patterns)})"
        )
    envelope = Envelope(
        subject=address,
        payload=b"",
        headers=headers or {},
        # A key that is not UTF-8 arrives from argv as surrogate escapes: its exact bytes.
        key=key.encode(errors="surrogateescape") if key is not None else None,
        origin=source_kind.preview_origin(route.source, address, partition),
    )
    mapper = RouteMapper(route, config.bridge, config.connections[route.sink.connection])
    try:
        mapped = mapper.map(envelope)
    except LoopDetected as exc:
        raise MappingError(f"dropped by loop prevention: {exc}") from None
    result: dict[str, object] = {"address": mapped.subject}
    if "key" in load_connector(route.sink_kind).sink_templates:
        result["key"] = mapped.key.decode(errors="replace") if mapped.key is not None else None
    result["headers"] = mapped.headers
    return result


def _header_texts(headers: Headers) -> list[tuple[str, str]]:
    texts = [("header name", name) for name in headers]
    return texts + [("header value", value) for values in headers.values() for value in values]


def _is_utf8(text: str) -> bool:
    # Arguments that are not UTF-8 reach Python as lone surrogates, which cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
