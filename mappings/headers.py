"""The bridge's own NATS header names, NATS header rules, and the shared header encodings.

Every header natsbridge itself reads or writes is defined here, once.

Loop prevention and delivery
    ``Nats-Msg-Id``        message id for JetStream's dedup window (``exactly_once``)
    ``Nats-Expected-Stream``  the stream a JetStream sink's publish must land in
    ``Bridge-Origin``      ``<bridge id>/<source connection>`` per hop (loop prevention)
    ``Bridge-Hops``        how many bridges have carried it (hop limit)
    ``Bridge-Reason``      why a message was dead-lettered
    ``Bridge-Dead-Letter-Stream``, ``Bridge-Dead-Letter-Seq``, ``Bridge-Deliveries``
                           where a dead letter came from, and how often it was tried
    ``Bridge-Buffer-Key``, ``Bridge-Buffer-Time``
                           buffer-private: a buffered message's Kafka key and timestamp

Source coordinates (written by source connectors)
    ``Kafka-Topic``, ``Kafka-Partition``, ``Kafka-Offset``, ``Kafka-Key``
    ``Amqp-Exchange``, ``Amqp-Routing-Key``, ``Amqp-Queue``
    ``Stomp-Destination``, ``Stomp-Message-Id``

Carried properties and encoding aids
    ``Amqp-Content-Type`` … ``Amqp-App-Id``   AMQP basic properties (see mappings.amqp_properties)
    ``Amqp-Header-Types``  types of AMQP header-table values that are not plain strings
    ``Kafka-Header-Order`` order of Kafka headers when grouping by name would lose it
    ``Stomp-Content-Type``, ``Stomp-Reply-To``  STOMP frame headers that NATS would misread

NATS header rules (what `validate_header_name` / `validate_header_value` enforce): a name
is an RFC 7230 token, one or more of the letters, digits and ``!#$%&'*+-.^_`|~`` — so no
``:``, space or control character. That is stricter than "printable ASCII without ``:``"
because nats-py refuses any other name when publishing. A value holds no CR or LF.
Names are case-sensitive, as in nats-py.

Foreign header names (Kafka keys, AMQP table keys, STOMP names) are made NATS-safe with
`escape_header_name`: token characters other than ``%`` are kept, anything else becomes
``%XX`` per UTF-8 byte, and the empty name becomes ``%``. Most names (``X-Id``,
``traceparent``) are unchanged. `unescape_header_name` decodes every ``%XX``, so a
translation module may also escape a character that needs none (the first letter of a
foreign name that collides with one of the bridge's own headers). A NATS name whose
``%`` starts no valid escape (``100%``) is taken as it is.

Foreign header names never act on NATS or the bridge (`foreign_header_name`, used by the
AMQP, Kafka and STOMP translations): a name that starts with ``Nats-`` (JetStream publish
directives such as ``Nats-Rollup`` and ``Nats-Expected-Stream``, ``Nats-Msg-Id``) or with
``Bridge-`` (``Bridge-Reason``, the buffer-private ``Bridge-Buffer-Key`` …), in any case,
gets its first character escaped: ``Nats-Rollup`` → ``%4Eats-Rollup``. ``Bridge-Origin``
and ``Bridge-Hops`` are the exception and pass as they are: loop prevention across bridges
relies on them. `unescape_header_name` gives every original name back, so a header
bridged on to a legacy broker again has its own name.

Header values that NATS cannot carry as they are — bytes that are not UTF-8, text with
control characters (CR, LF, NUL, C1 …), leading or trailing whitespace (nats-py strips
values when publishing and receiving), or text that already starts with the marker —
are written as
``base64:`` followed by standard base64 of the bytes (`encode_value`). Anything else is
kept as it is, so ordinary values stay readable.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence

from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import HeaderError

# Loop prevention, dedup, dead letters.
NATS_MSG_ID = "Nats-Msg-Id"
"""JetStream dedup id; set from source coordinates under ``exactly_once``."""
ESCAPED_NATS_MSG_ID = "%4Eats-Msg-Id"
"""A ``Nats-Msg-Id`` renamed so that it does not act (outside ``exactly_once``)."""
NATS_EXPECTED_STREAM = "Nats-Expected-Stream"
"""Set by the JetStream sink: the server refuses to store the message in another stream."""
NATS_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
"""Status of a failed request/reply exchange (``408`` when the answer timed out)."""
NATS_SERVICE_ERROR = "Nats-Service-Error"
"""Text of a failed request/reply exchange."""
BRIDGE_ORIGIN = "Bridge-Origin"
"""`<bridge id>/<source connection>`, one value per bridge hop (loop prevention)."""
BRIDGE_HOPS = "Bridge-Hops"
"""Number of bridges the message has crossed (decimal); compared with the hop limit."""
BRIDGE_REASON = "Bridge-Reason"
"""Why the message was dead-lettered (the error's message)."""
BRIDGE_DEAD_LETTER_STREAM = "Bridge-Dead-Letter-Stream"
"""Stream the dead-lettered message was in (or was headed to)."""
BRIDGE_DEAD_LETTER_SEQ = "Bridge-Dead-Letter-Seq"
"""Its sequence in that stream (absent when it never reached the stream)."""
BRIDGE_DELIVERIES = "Bridge-Deliveries"
"""How many times it was delivered before being dead-lettered (decimal)."""
BRIDGE_BUFFER_KEY = "Bridge-Buffer-Key"
"""The rendered Kafka key of a buffered message (buffer-private: removed on delivery)."""
BRIDGE_BUFFER_TIME = "Bridge-Buffer-Time"
"""The source timestamp of a buffered message (buffer-private: removed on delivery)."""

# Source coordinates.
KAFKA_TOPIC = "Kafka-Topic"
"""Kafka topic the message was consumed from."""
KAFKA_PARTITION = "Kafka-Partition"
"""Kafka partition (decimal)."""
KAFKA_OFFSET = "Kafka-Offset"
"""Kafka offset (decimal)."""
KAFKA_KEY = "Kafka-Key"
"""Kafka record key, encoded with `encode_value` (``base64:`` when not plain text)."""
KAFKA_HEADER_ORDER = "Kafka-Header-Order"
"""JSON list of Kafka header names in record order, only when names were interleaved."""
AMQP_EXCHANGE = "Amqp-Exchange"
"""AMQP exchange the message was published to (empty for the default exchange)."""
AMQP_ROUTING_KEY = "Amqp-Routing-Key"
"""AMQP routing key the message was published with."""
AMQP_QUEUE = "Amqp-Queue"
"""AMQP queue the bridge consumed the message from."""
AMQP_HEADER_TYPES = "Amqp-Header-Types"
"""JSON object: header name -> type code, for AMQP table values that are not strings."""
STOMP_DESTINATION = "Stomp-Destination"
"""STOMP destination the message was received on, with its prefix."""
STOMP_MESSAGE_ID = "Stomp-Message-Id"
"""The STOMP broker's message-id."""
STOMP_CONTENT_TYPE = "Stomp-Content-Type"
"""The STOMP frame's content-type."""
STOMP_REPLY_TO = "Stomp-Reply-To"
"""The STOMP frame's reply-to destination."""

BRIDGE_HEADERS = (
    NATS_MSG_ID,
    NATS_EXPECTED_STREAM,
    NATS_SERVICE_ERROR_CODE,
    NATS_SERVICE_ERROR,
    BRIDGE_ORIGIN,
    BRIDGE_HOPS,
    BRIDGE_REASON,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DELIVERIES,
    BRIDGE_BUFFER_KEY,
    BRIDGE_BUFFER_TIME,
    KAFKA_TOPIC,
    KAFKA_PARTITION,
    KAFKA_OFFSET,
    KAFKA_KEY,
    KAFKA_HEADER_ORDER,
    AMQP_EXCHANGE,
    AMQP_ROUTING_KEY,
    AMQP_QUEUE,
    AMQP_HEADER_TYPES,
    STOMP_DESTINATION,
    STOMP_MESSAGE_ID,
    STOMP_CONTENT_TYPE,
    STOMP_REPLY_TO,
)
"""Every header natsbridge defines, except the AMQP property headers in amqp_properties."""

JETSTREAM_PUBLISH_DIRECTIVES = frozenset(
    {
        NATS_EXPECTED_STREAM,
        "Nats-Expected-Last-Sequence",
        "Nats-Expected-Last-Subject-Sequence",
        "Nats-Expected-Last-Subject-Sequence-Subject",
        "Nats-Expected-Last-Msg-Id",
        "Nats-Rollup",
        "Nats-TTL",
        "Nats-Incr",
        "Nats-Counter-Sources",
        "Nats-Batch-Id",
        "Nats-Batch-Sequence",
        "Nats-Batch-Commit",
        "Nats-Schedule",
        "Nats-Schedule-Time-Zone",
        "Nats-Schedule-TTL",
        "Nats-Schedule-Rollup",
        "Nats-Schedule-Target",
        "Nats-Schedule-Source",
    }
)
"""Headers that tell JetStream how to store the publish that carries them (nats-server
2.15's names): preconditions, rollups, TTLs, counters, atomic batches, schedules.

A message read from NATS still carries the ones its publisher sent. They were meant for
that publish, not for the bridge's: on its own JetStream publish they would be refused
("wrong last sequence", a stream that allows no TTLs or counters) or purge the target's
history (``Nats-Rollup``), and to other brokers they mean nothing. NATS sources drop them
(`without_publish_directives`); ``Nats-Msg-Id`` is the message's identity and stays."""

RESERVED_PREFIXES = ("nats-", "bridge-")
"""Lower-cased prefixes of the header names NATS and the bridge act on."""
LOOP_HEADERS = frozenset({BRIDGE_ORIGIN, BRIDGE_HOPS})
"""Bridge headers a foreign message keeps as they are (loop prevention across bridges)."""

BASE64_MARKER = "base64:"
"""Prefix of a header value that holds base64 of bytes (see `encode_value`)."""

_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token
_SAFE_NAME_CHARS = re.compile(r"[!#$&'*+\-.^_`|~0-9A-Za-z]+")  # ... without '%'
_BAD_VALUE_CHAR = re.compile(r"[\r\n]")
# Readable as it is: no control characters or surrogates, no surrounding whitespace.
_PLAIN_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]*")
_HEX = re.compile(r"%([0-9A-F]{2})")


def without_publish_directives(headers: Headers) -> Headers:
    """`headers` without JETSTREAM_PUBLISH_DIRECTIVES (the same object when it has none)."""
    if JETSTREAM_PUBLISH_DIRECTIVES.isdisjoint(headers):
        return headers
    return {n: v for n, v in headers.items() if n not in JETSTREAM_PUBLISH_DIRECTIVES}


def validate_header_name(name: str) -> None:
    """Raise HeaderError unless `name` is a valid NATS header name."""
    if _NAME.fullmatch(name) is not None:
        return
    if name == "":
        raise HeaderError("empty header name")
    for offset, char in enumerate(name):
        if _NAME.fullmatch(char) is None:
            raise HeaderError(
                f"invalid character {char!r} at offset {offset} in header name {name!r}: "
                "names are letters, digits and !#$%&'*+-.^_`|~ (RFC 7230 tokens)"
            )
    raise AssertionError(name)  # pragma: no cover


def validate_header_value(name: str, value: str) -> None:
    """Raise HeaderError if `value` holds CR or LF."""
    bad = _BAD_VALUE_CHAR.search(value)
    if bad is not None:
        raise HeaderError(
            f"header {name!r} has {bad.group()!r} at offset {bad.start()} in its value: "
            "NATS header values cannot hold CR or LF"
        )


def validate_headers(headers: Mapping[str, Sequence[str]]) -> None:
    """Raise HeaderError for the first invalid name or value in `headers`.

    On the hot path of every NATS publish: names already seen valid are remembered (a
    bridge sees the same few names over and over), values are scanned with `in`.
    """
    for name, values in headers.items():
        if name not in _VALID_NAMES:
            validate_header_name(name)
            if len(_VALID_NAMES) < _VALID_NAMES_MAX:
                _VALID_NAMES.add(name)
        for value in values:
            if "\n" in value or "\r" in value:
                validate_header_value(name, value)


_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 4096  # bounded: header names can come from untrusted producers


def escape_header_name(name: str) -> str:
    """A valid NATS header name for any foreign `name`, reversibly (see module doc)."""
    if _SAFE_NAME_CHARS.fullmatch(name) is not None:
        return name
    if name == "":
        return "%"
    safe = _SAFE_NAME_CHARS
    return "".join(
        char if safe.fullmatch(char) else "".join(f"%{b:02X}" for b in _utf8(char)) for char in name
    )


def escape_first(name: str) -> str:
    """`name` with its first character percent-escaped (its first byte, for ASCII)."""
    return f"%{ord(name[0]):02X}{name[1:]}"


def foreign_header_name(name: str, taken: frozenset[str] = frozenset()) -> str:
    """The NATS name of a header from a legacy broker; never a reserved name (module doc).

    `taken` holds lower-cased names the calling translation writes itself (``Amqp-*``
    properties, ``Kafka-Header-Order`` …): a foreign name equal to one of them, in any
    case, gets its first character escaped too.
    """
    escaped = escape_header_name(name)
    lowered = escaped.lower()
    if (lowered.startswith(RESERVED_PREFIXES) and escaped not in LOOP_HEADERS) or (
        lowered in taken
    ):
        return escape_first(escaped)
    return escaped


def unescape_header_name(name: str) -> str:
    """Inverse of `escape_header_name`; a name with a malformed escape is returned as is."""
    if "%" not in name:
        return name
    if name == "%":
        return ""
    if re.search(r"%(?![0-9A-F]{2})", name):
        return name  # not something escaping produced, e.g. "100%"
    try:
        raw = _HEX.sub(lambda m: chr(int(m.group(1), 16)), name).encode("latin-1")
        return raw.decode("utf-8", "surrogatepass")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def is_plain_value(value: str) -> bool:
    """True when `value` travels as a NATS header value unchanged by `encode_value`."""
    if value.isascii():
        # isprintable() on ASCII means 0x20-0x7E: no control character.
        return (
            value.isprintable() and value == value.strip() and not value.startswith(BASE64_MARKER)
        )
    return (
        _PLAIN_VALUE.fullmatch(value) is not None
        and value == value.strip()
        and not value.startswith(BASE64_MARKER)
    )


def encode_value(value: str | bytes) -> str:
    """`value` as a NATS header value: unchanged when plain text, else ``base64:…``."""
    if isinstance(value, str):
        if is_plain_value(value):
            return value
        raw = _utf8(value)
    else:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and is_plain_value(text):
            return text
        raw = value
    return BASE64_MARKER + base64.b64encode(raw).decode("ascii")


def decode_value(value: str) -> bytes:
    """The bytes `encode_value` was given (text comes back as its UTF-8)."""
    if not value.startswith(BASE64_MARKER):
        return _utf8(value)
    try:
        return base64.b64decode(value[len(BASE64_MARKER) :], validate=True)
    except binascii.Error:
        raise HeaderError(f"malformed base64 header value {value!r}") from None


def decode_text_value(value: str) -> str:
    """The text `encode_value` was given."""
    if not value.startswith(BASE64_MARKER):
        return value
    try:
        return decode_value(value).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise HeaderError(f"header value {value!r} is not base64 of UTF-8 text") from None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
