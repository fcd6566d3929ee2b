"""Checks of a route with `buffer: none`: both ends must keep a message safe without it.

With no buffer the route keeps no copy: a message is safe only at its source until the
sink confirmed it. So the source must redeliver what it handed out and did not see
acked, and the sink's confirm must mean the destination stored the message. Each kind
declares which of its endpoints can (`ConnectorKind.direct`, `supports("direct", ...)`),
so that this check names no kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from natsbridge.bridge.config.model import Buffer, BufferMode, Delivery, Endpoint, RouteSpec
from natsbridge.bridge.config.source import YamlPath
from natsbridge.bridge.kind import ConnectorKind
from natsbridge.bridge.registry import all_kinds

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import _Checker


def alternatives(label: Callable[[ConnectorKind], str | None]) -> str:
    """The installed kinds' names for what they offer, alphabetical: "a X or a Y"."""
    names = sorted({text for kind in all_kinds().values() if (text := label(kind))})
    return " or ".join(names) or "a connector that offers it (none is installed)"


def check_direct(
    checker: _Checker,
    spec: RouteSpec,
    buffer: Buffer,
    endpoints: tuple[Endpoint, ConnectorKind, Endpoint, ConnectorKind],
    where: YamlPath,
) -> None:
    """A route whose effective buffer is `none`: its guarantee and both of its ends."""
    if buffer.mode is not BufferMode.NONE:
        return
    if spec.delivery is Delivery.AT_MOST_ONCE or spec.request_reply is not None:
        return  # no buffer there anyway: each message goes straight to the sink
    inherited = (
        ""
        if spec.buffer is not None and "mode" in spec.buffer.model_fields_set
        else (" (from bridge.buffer)")
    )
    if spec.delivery is Delivery.EXACTLY_ONCE:
        checker.fail(
            (*where, "delivery"),
            f"buffer none{inherited} cannot give exactly_once: after a crash its windows "
            "are resumed from a buffer; use buffer embedded or jetstream, or at_least_once",
        )
    source, source_kind, sink, sink_kind = endpoints
    if not source_kind.supports("direct", "from", source):
        checker.fail(
            (*where, "from"),
            f"buffer none{inherited} keeps no copy, so the source must redeliver what it "
            f"did not see acked: needs {alternatives(lambda kind: kind.direct[0])}; found "
            f"a {source_kind.label(source)} source, which does not",
        )
    if not sink_kind.supports("direct", "to", sink):
        checker.fail(
            (*where, "to"),
            f"buffer none{inherited} acks the source once the sink confirmed, so the "
            f"confirm must mean stored: needs {alternatives(lambda kind: kind.direct[1])}; "
            f"found a {sink_kind.label(sink)} sink, which does not confirm",
        )
