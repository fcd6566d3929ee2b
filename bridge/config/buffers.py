"""Checks of a route's buffer that need the rest of the file: the connection it names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from natsbridge.bridge.config.model import Buffer, BufferMode, RouteSpec
from natsbridge.bridge.config.source import YamlPath

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import _Checker

STREAM_HOLDER_KIND = "nats"


def check_bridge_buffer(checker: _Checker, buffer: Buffer) -> None:
    """`bridge.buffer`, every route's default, checked once."""
    _check(checker, buffer, ("bridge", "buffer"))


def check_route_buffer(checker: _Checker, spec: RouteSpec, buffer: Buffer, where: YamlPath) -> None:
    """The route's effective `buffer`, where the route wrote what makes it wrong."""
    written = spec.buffer
    if written is None or not written.model_fields_set & {"mode", "connection"}:
        return  # what it inherits from bridge.buffer was checked there
    _check(checker, buffer, (*where, "buffer"))


def _check(checker: _Checker, buffer: Buffer, where: YamlPath) -> None:
    if buffer.mode is not BufferMode.JETSTREAM:
        return
    if buffer.connection is None:
        checker.fail(
            where,
            "mode jetstream needs `connection`: the NATS connection whose JetStream holds "
            "the buffer, e.g. {mode: jetstream, connection: cluster}",
        )
        return
    kind = checker.kinds.get(buffer.connection)
    at = (*where, "connection")
    if kind is None:
        known = ", ".join(sorted(checker.kinds)) or "none"
        checker.fail(at, f"unknown connection '{buffer.connection}' (connections: {known})")
    elif kind != STREAM_HOLDER_KIND:
        checker.fail(
            at, f"a {kind} connection cannot hold a buffer: expected a {STREAM_HOLDER_KIND} one"
        )
