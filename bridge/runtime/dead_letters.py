"""What a dead letter says: its reason, where it came from (for the one log line), its stored form.

Pure functions for bridge.runtime.route, which dead-letters a message on the way in (it
could not be converted or mapped: its Origin is known) or on the way out (the destination
refused it for good, or it is poison: only its headers say where it came from).
"""

from __future__ import annotations

from functools import cache

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.registry import all_kinds
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.mappings.headers import BRIDGE_ORIGIN


def reason_of(error: BaseException) -> str:
    """The `Bridge-Reason` of a dead letter: the error's type and message."""
    return f"{type(error).__name__}: {error}"


def origin_text(envelope: Envelope) -> str:
    """Where a message came from, for a log line (repr: text that is not UTF-8 stays visible)."""
    origin = envelope.origin
    if origin is None:
        return f"subject {envelope.subject!r}"
    values = list(origin._asdict().items())[2:]  # the kind's own coordinates
    where = ", ".join(f"{name} {value!r}" for name, value in values if value is not None)
    return f"{origin.kind} connection {origin.connection!r} ({where})"


def storable(envelope: Envelope) -> Envelope:
    """`envelope` with every text UTF-8 encodable, as the dead-letter stream stores it.

    A source may hand over text holding lone surrogates (bytes that were not UTF-8,
    decoded with surrogateescape); a dead letter keeps them visible as backslash escapes.
    """
    headers = {
        _utf8_text(name): [_utf8_text(value) for value in values]
        for name, values in envelope.headers.items()
    }
    return Envelope(
        subject=_utf8_text(envelope.subject),
        payload=bytes(envelope.payload),
        headers=headers,
        origin=envelope.origin,
        timestamp=envelope.timestamp,
        key=envelope.key if isinstance(envelope.key, bytes) else None,
    )


def _utf8_text(text: object) -> str:
    if not isinstance(text, str):
        return repr(text)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@cache
def source_coordinates() -> tuple[str, ...]:
    """Headers that say where a buffered message came from (its Origin is not buffered).

    Bridge-Origin, then every installed kind's `coordinate_headers`.
    """
    kinds = all_kinds().values()
    return (BRIDGE_ORIGIN, *(name for kind in kinds for name in kind.coordinate_headers))


def buffered_text(item: Buffered) -> str:
    """Where a buffered message came from, for a log line: buffer seq, id, source headers."""
    envelope = item.envelope
    parts = [f"buffer seq {item.seq}"]
    if envelope.msg_id:
        parts.append(f"msg_id {envelope.msg_id!r}")
    for name in source_coordinates():
        value = envelope.header(name)
        if value is not None:
            parts.append(f"{name} {value!r}")
    return ", ".join(parts)
