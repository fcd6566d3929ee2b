"""What a dead letter says: its reason, where it came from (for the one log line), its stored form.

Pure functions for bridge.runtime.route, which dead-letters a message on the way in (it
could not be converted or mapped: its Origin is known) or on the way out (the destination
refused it for good, or it is poison: only its headers say where it came from).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.registry import all_kinds
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.mappings.headers import BRIDGE_ORIGIN

WARNING_WINDOW_S = 10.0


class DeadLetterWarnings:
    """One WARNING line per dead letter, at most one per `window`: the rest are counted.

    The first dead letter of a window is logged in full; those that follow within it
    are summed up in one line when the window ends ("... and 312 more in 10 s").
    """

    def __init__(
        self,
        log: logging.LoggerAdapter[Any] | logging.Logger,
        window: float = WARNING_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.window = window
        self.clock = clock
        self.opened: float | None = None  # when the window's first line was logged
        self.more = 0
        self.summary: asyncio.TimerHandle | None = None

    def warn(self, message: str, *args: object, extra: dict[str, Any]) -> None:
        """Log one dead letter, or count it when one was logged less than `window` ago."""
        if self.opened is not None and self.clock() - self.opened < self.window:
            self.more += 1
            self._summarize_later()
            return
        self.flush()
        self.opened = self.clock()
        self.log.warning(message, *args, extra=extra)

    def flush(self) -> None:
        """Log the count of the dead letters not logged one by one, if any."""
        if self.summary is not None:
            self.summary.cancel()
            self.summary = None
        if self.more:
            self.log.warning(
                "... and %d more dead-lettered in %g s (natsbridge dlq show)",
                self.more,
                self.window,
                extra={"event": "dead_lettered_more", "count": self.more},
            )
            self.more = 0
            self.opened = None

    def _summarize_later(self) -> None:
        if self.summary is not None or self.opened is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: flush() says it
            return
        left = max(self.window - (self.clock() - self.opened), 0.0)
        self.summary = loop.call_later(left, self.flush)


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
