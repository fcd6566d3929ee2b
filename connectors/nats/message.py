"""NATS headers as the bridge reads and writes them: repeated names kept, blocks written once.

nats-py keeps one value per header name and decodes subjects strictly inside its read
loop; the bridge's client (connectors.nats.driver) parses and writes with these instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import HeaderError
from natsbridge.mappings.headers import validate_headers


class MultiHeaders(dict[str, str]):
    """Received headers: a plain dict (first value per name) plus every value in `.all`.

    nats-py's own parser keeps only the last value of a repeated header name; NATS
    allows repeats (`X-A: 1`, `X-A: 2`) and the Envelope is multi-valued, so the
    client below parses with this class instead.
    """

    __slots__ = ("all",)

    def __init__(self) -> None:
        super().__init__()
        self.all: Headers = {}

    @classmethod
    def parse(cls, raw: bytes) -> MultiHeaders:
        """Parse `Name: Value` lines as nats-py does, keeping repeated names."""
        out = cls()
        out.all = parse_header_lines(raw)
        for name, values in out.all.items():
            dict.__setitem__(out, name, values[-1])
        return out


_WHITESPACE = re.compile(r"\s")


def parse_header_lines(raw: bytes) -> Headers:
    """`Name: Value` lines as nats-py reads them (lines without a colon, or with a name
    that is empty, not ASCII or has white space, are skipped), repeated names kept."""
    headers: Headers = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if not key or _WHITESPACE.search(key):
            continue
        text = value.strip().decode("utf-8", "replace")
        values = headers.get(key)
        if values is None:
            headers[key] = [text]
        else:
            values.append(text)
    return headers


class HeaderBlock(bytes):
    """A header block encoded by `header_block()`, ready for the wire.

    Passed to nats-py's publish/request as `headers` (typed there as a dict, hence the
    `type: ignore[arg-type]` at those calls): `NatsClient` writes it as it is
    instead of encoding a dict again (nats-py checks every name with a regex and keeps
    one value per name; this keeps repeated names, validated once by the bridge).
    """


def header_block(headers: Headers, extra: Sequence[tuple[str, str]] = ()) -> HeaderBlock | None:
    """Envelope headers plus the connector's own `extra` (replacing same-named ones); None if none.

    Raises HeaderError for a name or value NATS cannot carry. `extra` names are trusted,
    their values are not (a message id comes from the source): the last guard counts the
    line breaks of the finished block, so that a CR, LF or NUL anywhere fails this one
    message (dead-lettered) and can never inject a header. The block's length counts
    against the server's max_payload with the payload.
    """
    if headers:
        validate_headers(headers)  # RFC 7230 token names; no CR/LF in values
    replaced = {name for name, _ in extra}
    lines = [
        f"{name}: {value}\r\n"
        for name, values in headers.items()
        if name not in replaced
        for value in values
    ]
    lines.extend(f"{name}: {value}\r\n" for name, value in extra)
    if not lines:
        return None
    text = "".join(lines)
    count = len(lines)
    if text.count("\n") != count or text.count("\r") != count or "\x00" in text:
        raise HeaderError(f"a header holds CR, LF or NUL: {_bad_line(lines)!r}")
    try:
        return HeaderBlock(b"NATS/1.0\r\n" + text.encode() + b"\r\n")
    except UnicodeEncodeError as exc:
        raise HeaderError(f"a header is not valid UTF-8 text: {exc}") from None


def _bad_line(lines: Sequence[str]) -> str:
    """The first header line holding a CR, LF or NUL of its own."""
    for line in lines:
        body = line[:-2]
        if "\r" in body or "\n" in body or "\x00" in body:
            return body
    return ""


def subject_text(raw: bytes) -> str:
    """A subject (or reply subject) as received, as text, whatever its bytes.

    The server takes any bytes but space in a subject. nats-py decodes strictly inside
    its read loop, where an error makes it reconnect and be sent the same message again,
    forever; surrogateescape keeps the bytes, and the mappers escape them back.
    """
    return raw.decode("utf-8", "surrogateescape")


def read_header_block(raw: bytes) -> tuple[str, str, Headers]:
    """(status code, description, headers) of a header block as received.

    `NATS/1.0\r\nName: value\r\n...` for a message with headers (status ""), or
    `NATS/1.0 408 Request Timeout\r\n...` for a status message the server sends.
    """
    first, _, lines = raw.partition(b"\r\n")
    code, _, description = (
        first[len(b"NATS/1.0") :].strip().decode("utf-8", "replace").partition(" ")
    )
    return code, description.strip(), parse_header_lines(lines)


def from_nats_headers(headers: dict[str, str] | None) -> Headers:
    """nats-py's received headers as multi-valued Envelope headers."""
    if not headers:
        return {}
    if isinstance(headers, MultiHeaders):
        return {name: list(values) for name, values in headers.all.items()}
    return {name: [value] for name, value in headers.items()}
