"""STOMP frames to Envelopes and back: the only place that knows a frame's layout.

Received frames: `FrameSplitter` cuts them from the stream (a body of ``content-length``
bytes may hold NULs) and `parse_frame` parses them, exactly as stomp.py's own
``parse_frame`` does (a property test holds them equal) at a third of the cost: headers
unescaped (STOMP 1.2, ``\\c`` ``\\n`` ``\\r`` ``\\\\``), the first of a repeated header
kept, the body the exact bytes. Headers are not unescaped a second time here.

Frames the connector sends (SUBSCRIBE, ACK, NACK, SEND, DISCONNECT) are written here,
not by stomp.py: stomp.py 9 escapes header values but not header names, sorts headers,
and sends ``content-length`` only for non-empty bodies. `encode_frame` escapes names and
values (mappings.stomp.escape_header), keeps the connector's own headers first (STOMP 1.2
honours the first occurrence of a repeated header) and always writes ``content-length``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from stomp.utils import Frame  # type: ignore[import-untyped]

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import HeaderError, MessageRejected
from natsbridge.connectors.stomp.kind import StompOrigin as Origin
from natsbridge.mappings.stomp import escape_header, send_headers, stomp_to_nats_headers

OCTET_STREAM = "application/octet-stream"
"""The content-type of a SEND whose envelope carries none."""

_UNESCAPES = {"\\r": "\r", "\\n": "\n", "\\c": ":", "\\\\": "\\"}
_ESCAPE_SEQUENCE = re.compile(r"\\.")  # as stomp.py: an unknown escape stays as it is


def _unescape_match(match: re.Match[str]) -> str:
    text = match.group(0)
    return _UNESCAPES.get(text, text)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    if "\\\\" not in text:  # each escape stands alone: plain replaces (ActiveMQ's ids: \c)
        return text.replace("\\c", ":").replace("\\n", "\n").replace("\\r", "\r")
    return _ESCAPE_SEQUENCE.sub(_unescape_match, text)


def parse_frame(raw: bytes) -> Frame | None:
    """The Frame of one received frame (without its NUL), or None when it holds no command.

    The same result as stomp.py's ``stomp.utils.parse_frame``: the preamble ends at the
    first blank line (LF or CRLF), lines end at LF or CRLF, blank lines before the
    command are skipped, a header line is ``name:value`` split at the first colon (a line
    without a name is ignored), names and values are unescaped, text is UTF-8 with
    undecodable bytes replaced.
    """
    head_end, body_start = _blank_line(raw, 0, len(raw))
    if head_end < 0:
        preamble, body = raw, b""
    else:
        preamble, body = raw[:head_end], raw[body_start:]
    *ended, tail = preamble.decode("utf-8", errors="replace").split("\n")
    lines = [line[:-1] if line[-1:] == "\r" else line for line in ended]  # CRLF or LF
    lines.append(tail)
    first = 0
    while first < len(lines) and not lines[first]:
        first += 1
    if first == len(lines):
        return None
    headers: dict[str, str] = {}
    for line in lines[first + 1 :]:
        name, colon, value = line.partition(":")
        if not colon or not name:
            continue
        name = _unescape(name)
        if name not in headers:
            headers[name] = _unescape(value)
    return Frame(lines[first], headers, body)


_CONTENT_LENGTH = b"\ncontent-length:"


class FrameSplitter:
    """Cuts the frames out of a received byte stream, as stomp.py's transport does.

    A frame ends at its NUL, or after ``content-length`` body bytes when the body holds
    NULs; EOLs between frames (heart-beats) are dropped. `feed` returns the complete
    frames without their NUL (for `parse_frame`). An incomplete frame's bytes are kept
    as received and joined only once a read can complete it (one with a NUL, and as many
    bytes as its content-length asks for), so a large frame costs linear time.
    """

    __slots__ = ("_need", "_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # an incomplete frame, as received
        self._size = 0
        self._need = 0  # bytes the incomplete frame needs at least (from its content-length)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by `data`, in order."""
        if self._parts:
            self._parts.append(data)
            self._size += len(data)
            if self._size < self._need or b"\x00" not in data:
                return []
            buffer = b"".join(self._parts)
            self._parts, self._size, self._need = [], 0, 0
        else:
            buffer = data
        frames = []
        start, size = 0, len(buffer)
        while start < size:
            if buffer[start] == 10:  # LF
                start += 1
                continue
            if buffer.startswith(b"\r\n", start):
                start += 2
                continue
            end = buffer.find(b"\x00", start)
            if end < 0:
                break
            body = _blank_line(buffer, start, end)[1]
            length_at = buffer.find(_CONTENT_LENGTH, start, body) if body >= 0 else -1
            if length_at >= 0:
                value_end = buffer.find(b"\n", length_at + 1, body)
                value = buffer[length_at + len(_CONTENT_LENGTH) : value_end].strip()
                if value.isdigit() and body + int(value) > end:
                    end = body + int(value)  # NULs in the body: its NUL is further on
                    if end >= size:
                        self._need = end + 1 - start
                        break  # wait for the rest of the body
            frames.append(buffer[start:end])
            start = end + 1
        if start < size:
            self._parts, self._size = [buffer[start:]], size - start
        return frames


def _blank_line(buffer: bytes, start: int, end: int) -> tuple[int, int]:
    """Where the frame at `start` ends its headers and starts its body: the first blank line
    (LF LF or CRLF CRLF) before `end`; (-1, -1) without one."""
    lf = buffer.find(b"\n\n", start, end)
    crlf = buffer.find(b"\r\n\r\n", start, end)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 4
    return (lf, lf + 2) if lf >= 0 else (-1, -1)


def encode_frame(command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """One STOMP 1.2 frame with escaped header names and values; HeaderError if not UTF-8."""
    lines = [command]
    lines.extend(f"{escape_header(name)}:{escape_header(value)}" for name, value in headers)
    lines.append("\n")
    try:
        head = "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HeaderError(f"stomp: a header is not valid UTF-8 text: {exc}") from None
    return head + body + b"\x00"


def ack_frame(ack_id: str) -> bytes:
    """ACK of the message whose ``ack`` header was `ack_id` (STOMP 1.2: ``id`` header)."""
    return b"ACK\nid:" + escape_header(ack_id).encode() + b"\n\n\x00"


def nack_frame(ack_id: str, requeue: bool | None = None) -> bytes:
    """NACK of the message; `requeue` False adds RabbitMQ's ``requeue:false`` (dead-letter)."""
    extra = b"" if requeue is None else b"\nrequeue:" + (b"true" if requeue else b"false")
    return b"NACK\nid:" + escape_header(ack_id).encode() + extra + b"\n\n\x00"


def send_frame(
    envelope: Envelope, destination: str, receipt: str, persistent: bool, dialect: str
) -> bytes:
    """The SEND frame for `envelope`: binary-safe body, carried headers, a receipt.

    ``content-length`` is always written (binary payloads, NUL bytes); ``content-type``
    is the carried ``Stomp-Content-Type`` or application/octet-stream. Which carried
    headers a SEND takes, and under what name, is mappings.stomp.send_headers's table.
    """
    content_type, carried = (
        send_headers(envelope.headers, dialect) if envelope.headers else (None, {})
    )
    expires = carried.get("expires")
    if expires is not None and 0 < int(expires) <= time.time() * 1000:
        # The broker would take it, confirm it and discard it unread (ActiveMQ does).
        raise MessageRejected(
            f"expired before delivery: expires {expires} (ms since the epoch) has passed"
        )
    # The connector's own headers first (STOMP 1.2 honours the first of a repeated name);
    # their names need no escaping.
    lines = [
        f"SEND\ndestination:{escape_header(destination)}"
        f"\ncontent-type:{escape_header(content_type or OCTET_STREAM)}"
        f"\ncontent-length:{len(envelope.payload)}\nreceipt:{escape_header(receipt)}"
    ]
    if persistent:
        lines.append("persistent:true")
    lines.extend(f"{escape_header(name)}:{escape_header(value)}" for name, value in carried.items())
    lines.append("\n")
    try:
        head = "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HeaderError(f"stomp: a header is not valid UTF-8 text: {exc}") from None
    return head + envelope.payload + b"\x00"


ORIGIN_CACHE_SIZE = 4096
"""Origins are kept per destination, up to this many (wildcard subscriptions see many)."""


class EnvelopeReader:
    """Builds Envelopes from MESSAGE frames of one connection and dialect."""

    def __init__(self, connection: str, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect
        self._origins: dict[str, Origin] = {}  # by destination; a route sees a few

    def envelope(self, headers: Mapping[str, str], body: bytes, fallback: str) -> Envelope:
        """The Envelope of a MESSAGE frame; `fallback` is the subscribed destination.

        ``subject`` and ``origin.destination`` are the frame's real destination (for a
        wildcard subscription, the destination the message was sent to). ``msg_id``:
        ActiveMQ's ``message-id`` is the JMS message id, the same on every redelivery;
        RabbitMQ's names one delivery and changes on redelivery, so the rabbitmq dialect
        uses the producer's ``amqp-message-id`` instead, when there is one.
        """
        destination = headers.get("destination") or fallback
        if self.dialect == "activemq":
            msg_id = headers.get("message-id")
        else:
            msg_id = headers.get("amqp-message-id")
        envelope = Envelope(
            subject=destination,
            payload=body,
            headers=stomp_to_nats_headers(headers),
            reply=headers.get("reply-to"),
            msg_id=msg_id,
            origin=self._origin(destination),
        )
        stamp = headers.get("timestamp") if self.dialect == "activemq" else None
        if stamp and stamp.isdigit():
            envelope.timestamp = int(stamp) / 1000  # JMSTimestamp, milliseconds
        return envelope

    def undecodable(self, headers: Mapping[str, str], body: bytes, fallback: str) -> Envelope:
        """The Envelope of a MESSAGE frame whose headers cannot be converted: body and origin."""
        destination = headers.get("destination") or fallback
        return Envelope(subject=destination, payload=body, origin=self._origin(destination))

    def _origin(self, destination: str) -> Origin:
        origin = self._origins.get(destination)
        if origin is None:
            if len(self._origins) >= ORIGIN_CACHE_SIZE:
                self._origins.clear()
            origin = self._origins[destination] = Origin(
                self.connection, "stomp", destination=destination
            )
        return origin
