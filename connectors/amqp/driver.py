"""Every place the AMQP connector touches pika's private internals, behind a version guard.

basic.publish frames marshalled a batch at a time: the sink's hot path.

pika's `Channel.basic_publish` builds three frame objects per message and marshals each
through several layers: about 40% of the sink's CPU time in a profile of 1 KiB messages.
The sink publishes whole batches on its own channel, so it writes the same bytes itself:
the method frame is cached per routing key, the content header comes from pika's own
`BasicProperties.encode()`, and a batch reaches pika's output buffer in one piece.

The bytes are exactly pika's (tests/connectors/test_amqp.py compares them). This uses one
private pika method, `Connection._output_marshaled_frames`, and the negotiated
`Connection._body_max_length`; `FramePublisher.create` returns None when a connection
lacks them, and the sink then falls back to `basic_publish`.

Importing this module checks the installed pika against `TESTED` (and that the private
method is there) and raises DriverVersionError naming both versions otherwise.
"""

from __future__ import annotations

import struct
from typing import Any

from pika.connection import Connection
from pika.spec import BasicProperties

from natsbridge.bridge.drivers import DriverVersionError, require

DISTRIBUTION = "pika"
TESTED = ((1, 3), (1, 5))
"""pika >=1.3,<1.5 (pyproject.toml pins the same range)."""

VERSION = require(DISTRIBUTION, *TESTED)
if not callable(getattr(Connection, "_output_marshaled_frames", None)):  # pragma: no cover
    raise DriverVersionError(f"pika {VERSION} has no Connection._output_marshaled_frames")

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_END = b"\xce"
BASIC_CLASS = 60
_BASIC_PUBLISH = struct.pack(">IH", (BASIC_CLASS << 16) | 40, 0)  # method id, ticket 0
_FRAME = struct.Struct(">BHI")  # type, channel, payload size
_CONTENT_HEADER = struct.Struct(">BHIHHQ")  # frame head, class, weight 0, body size
_KEY_CACHE_SIZE = 4096
"""Method frames are cached per routing key, up to this many keys."""


class FramePublisher:
    """Marshals basic.publish + content header + body frames for one channel and exchange."""

    __slots__ = (
        "_bits",
        "_channel",
        "_head",
        "_keys",
        "_last_encoded",
        "_last_properties",
        "_max_body",
        "_output",
    )

    def __init__(
        self, output: Any, max_body: int, channel: int, exchange: str, mandatory: bool
    ) -> None:
        self._output = output
        self._max_body = max_body
        self._channel = channel
        self._head = _BASIC_PUBLISH + _short_string(exchange)
        self._bits = b"\x01" if mandatory else b"\x00"  # bit 0 mandatory, bit 1 immediate
        self._keys: dict[str, bytes] = {}
        self._last_properties: BasicProperties | None = None
        self._last_encoded = b""

    @classmethod
    def create(
        cls, connection: Any, channel: int, exchange: str, mandatory: bool
    ) -> FramePublisher | None:
        """A publisher writing to pika `connection`, or None if this pika cannot take it."""
        output = getattr(connection, "_output_marshaled_frames", None)
        max_body = getattr(connection, "_body_max_length", None)
        if not callable(output) or not isinstance(max_body, int) or max_body <= 0:
            return None
        return cls(output, max_body, channel, exchange, mandatory)

    def add(
        self, out: list[bytes], routing_key: str, body: bytes, properties: BasicProperties
    ) -> None:
        """Append the frames of one message to `out` (routing key checked: ≤ 255 bytes)."""
        channel = self._channel
        method = self._keys.get(routing_key)
        if method is None:
            payload = self._head + _short_string(routing_key) + self._bits
            method = _FRAME.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[routing_key] = method
        if properties is self._last_properties:
            encoded = self._last_encoded  # the sink reuses one object for plain messages
        else:
            encoded = b"".join(properties.encode())
            self._last_properties = properties
            self._last_encoded = encoded
        size = len(body)
        out.append(method)
        out.append(
            _CONTENT_HEADER.pack(FRAME_HEADER, channel, 12 + len(encoded), BASIC_CLASS, 0, size)
        )
        out.append(encoded)
        out.append(FRAME_END)
        if size <= self._max_body:
            if size:
                out.append(_FRAME.pack(FRAME_BODY, channel, size))
                out.append(body)
                out.append(FRAME_END)
            return
        step = self._max_body
        for start in range(0, size, step):
            chunk = body[start : start + step]
            out.append(_FRAME.pack(FRAME_BODY, channel, len(chunk)))
            out.append(chunk)
            out.append(FRAME_END)

    def write(self, out: list[bytes]) -> None:
        """Hand the frames in `out` to pika's output buffer, in one piece."""
        if out:
            self._output([b"".join(out)])


def _short_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {text[:40]!r}…")
    return bytes((len(raw),)) + raw
