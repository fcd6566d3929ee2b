"""STOMP destinations and STOMP 1.2 headers, to NATS and back.

Dialects (the ``dialect`` of a stomp connection)
    ``activemq``  ``/queue/NAME``, ``/topic/NAME``, ``/temp-queue/NAME``,
                  ``/temp-topic/NAME``. ActiveMQ's name grammar is NATS's own: ``.``
                  separates, ``*`` is one token, ``>`` the rest.
    ``rabbitmq``  ``/queue/NAME``, ``/amq/queue/NAME``, ``/topic/ROUTING_KEY``,
                  ``/exchange/EXCHANGE`` or ``/exchange/EXCHANGE/ROUTING_KEY``,
                  ``/temp-queue/NAME``, ``/reply-queue/NAME``. Subscription patterns on
                  ``/topic/`` and ``/exchange/`` use AMQP's ``*`` and ``#``.

Destination ↔ subject (`destination_to_subject`, `subject_to_destination`)
    The subject is the kind as one token, then the name escaped word by word
    (mappings.escaping): ``/topic/quotes.NYSE`` → ``topic.quotes.NYSE``, ``/queue/a b``
    → ``queue.a%20b``, ``/amq/queue/q`` → ``amq-queue.q``, ``/exchange/amq.topic/x.y``
    → ``exchange.amq%2Etopic.x.y`` (the exchange is one token), ``/exchange/logs`` →
    ``exchange.logs``. Keeping the kind makes the mapping injective across kinds. Names
    must not be empty; both directions check the kind against the dialect.

``{{destination}}`` in templates is `destination_name`: the destination without its
prefix (``/topic/``, ``/queue/``, ``/amq/queue/``, ``/exchange/X/``, ``/temp-queue/`` …).

Patterns (`match_destination`): a pattern like ``/topic/quotes.>`` matches destinations
of the same kind (and exchange); its name is matched token by token, with AMQP rules
(``#`` = zero or more words) when it holds a ``#`` word, NATS rules otherwise. Only the
``*`` captures are returned.

Headers (`stomp_to_nats_headers`, `nats_to_stomp_headers`)
    Frame-level headers that mean nothing after the frame (``subscription``, ``ack``,
    ``content-length``, ``receipt``, ``receipt-id``, ``transaction``, ``heart-beat``)
    are dropped. ``destination``, ``message-id``, ``content-type`` and ``reply-to`` are
    renamed to ``Stomp-Destination``, ``Stomp-Message-Id``, ``Stomp-Content-Type`` and
    ``Stomp-Reply-To``; every other header keeps its name (through
    `mappings.headers.foreign_header_name`: escaped when NATS cannot carry it; a
    reserved ``Nats-*`` / ``Bridge-*`` name, or an application header that happens to be
    named like one of the four renamed ones, gets its first character escaped). Values
    go through `mappings.headers.encode_value`. The reverse
    mapping undoes all of it exactly; NATS headers with several values keep the first,
    as STOMP 1.2 only honours the first occurrence of a repeated header.
    `escape_header` / `unescape_header` implement STOMP 1.2's frame escaping
    (``\\r``, ``\\n``, ``\\c``, ``\\\\``) for connectors that write frames themselves;
    a NUL, which STOMP cannot escape, is a HeaderError (the message is dead-lettered).

SEND headers (`send_headers`)
    What a SEND frame takes from a message: frame-control headers are the bridge's own,
    broker directives (``transformation``, ``AMQ_SCHEDULED_*``, RabbitMQ's ``x-*`` …) and
    numeric headers the broker cannot parse are carried inert as ``Carried-<name>``; the
    table is `SEND_BY_BRIDGE`, `SEND_NEVER`, `SEND_INERT`, `SEND_NUMBERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import HeaderError, MappingError
from natsbridge.mappings import headers as h
from natsbridge.mappings.amqp import topic_match
from natsbridge.mappings.escaping import escape_token, escape_words, unescape_token, unescape_words
from natsbridge.mappings.subjects import match_tokens

DIALECTS = ("activemq", "rabbitmq")

# kind -> prefix; the kind is also the first token of the subject form.
_PREFIX = {
    "queue": "/queue/",
    "topic": "/topic/",
    "temp-queue": "/temp-queue/",
    "temp-topic": "/temp-topic/",
    "amq-queue": "/amq/queue/",
    "reply-queue": "/reply-queue/",
    "exchange": "/exchange/",
}
_KINDS = {
    "activemq": ("queue", "topic", "temp-queue", "temp-topic"),
    "rabbitmq": ("queue", "topic", "amq-queue", "exchange", "temp-queue", "reply-queue"),
}
# Longest prefix first, so '/amq/queue/' is not read as something shorter.
_BY_PREFIX = sorted(((p, k) for k, p in _PREFIX.items()), key=lambda pk: -len(pk[0]))


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed STOMP destination: its kind (``queue``, ``topic``, …) and name.

    For ``/exchange/X/rk`` the kind is ``exchange``, `exchange` is ``X`` and `name` is
    the routing key; `has_key` is False for ``/exchange/X`` (no routing key part).
    """

    kind: str
    name: str
    exchange: str | None = None
    has_key: bool = True

    def __str__(self) -> str:
        if self.kind == "exchange":
            tail = f"/{self.name}" if self.has_key else ""
            return f"/exchange/{self.exchange}{tail}"
        return _PREFIX[self.kind] + self.name


def _check_dialect(dialect: str) -> None:
    if dialect not in _KINDS:
        raise MappingError(f"unknown STOMP dialect {dialect!r}: expected one of {DIALECTS}")


def _split(destination: str) -> Destination | None:
    """Kind and name of `destination` in any dialect, or None without a known prefix."""
    for prefix, kind in _BY_PREFIX:
        if destination.startswith(prefix):
            rest = destination[len(prefix) :]
            if kind != "exchange":
                return Destination(kind, rest)
            exchange, slash, key = rest.partition("/")
            return Destination(kind, key, exchange, has_key=bool(slash))
    return None


def parse_destination(destination: str, dialect: str) -> Destination:
    """Parse `destination` for `dialect`; MappingError when the dialect has no such kind."""
    _check_dialect(dialect)
    parsed = _split(destination)
    if parsed is None or parsed.kind not in _KINDS[dialect]:
        prefixes = ", ".join(_PREFIX[k] for k in _KINDS[dialect])
        raise MappingError(
            f"STOMP destination {destination!r} is not valid for {dialect}: "
            f"it must start with one of {prefixes}"
        )
    if parsed.kind == "exchange" and parsed.exchange == "":
        raise MappingError(f"empty exchange name in STOMP destination {destination!r}")
    if parsed.name == "" and parsed.kind != "exchange":
        raise MappingError(f"empty name in STOMP destination {destination!r}")
    return parsed


def destination_name(destination: str) -> str:
    """`destination` without its prefix (``/topic/a.b`` → ``a.b``, ``/exchange/X/k`` → ``k``)."""
    parsed = _split(destination)
    if parsed is None:
        return destination
    return parsed.name


def destination_to_subject(destination: str, dialect: str) -> str:
    """The NATS subject for `destination` (reversible, injective; see module doc)."""
    d = parse_destination(destination, dialect)
    if d.kind == "exchange":
        assert d.exchange is not None
        head = f"exchange.{escape_token(d.exchange)}"
        return f"{head}.{escape_words(d.name)}" if d.has_key else head
    return f"{d.kind}.{escape_words(d.name)}"


def subject_to_destination(subject: str, dialect: str) -> str:
    """The destination that `destination_to_subject` turned into `subject`."""
    _check_dialect(dialect)
    kind, _, rest = subject.partition(".")
    if kind not in _KINDS[dialect] or not rest:
        raise MappingError(
            f"subject {subject!r} does not name a {dialect} STOMP destination: "
            f"expected '<kind>.<name>' with kind one of {', '.join(_KINDS[dialect])}"
        )
    if kind == "exchange":
        exchange, dot, key = rest.partition(".")
        name = unescape_token(exchange)
        return f"/exchange/{name}/{unescape_words(key)}" if dot else f"/exchange/{name}"
    return _PREFIX[kind] + unescape_words(rest)


def pattern_stars(pattern: str) -> int:
    """How many ``*`` tokens the name part of destination `pattern` holds."""
    parsed = _split(pattern)
    name = pattern if parsed is None else parsed.name
    return name.split(".").count("*")


def match_destination(pattern: str, destination: str) -> tuple[str, ...] | None:
    """The ``*`` captures of `destination` against destination `pattern`, or None."""
    p = _split(pattern)
    d = _split(destination)
    if p is None or d is None:
        if p is None and d is None:
            return _match_name(pattern, destination)
        return None
    if p.kind != d.kind or p.exchange != d.exchange:
        return None
    return _match_name(p.name, d.name)


def _match_name(pattern: str, name: str) -> tuple[str, ...] | None:
    ptoks = pattern.split(".")
    if "#" in ptoks:
        return topic_match(pattern, name)
    captures = match_tokens(ptoks, name.split("."))
    if captures is not None and ptoks[-1] == ">":
        return captures[:-1]
    return captures


# --- headers -------------------------------------------------------------------------

DROPPED_HEADERS = frozenset(
    {"subscription", "ack", "content-length", "receipt", "receipt-id", "transaction", "heart-beat"}
)
"""Frame-level STOMP headers that are not carried to NATS."""

_RENAMED = {
    "destination": h.STOMP_DESTINATION,
    "message-id": h.STOMP_MESSAGE_ID,
    "content-type": h.STOMP_CONTENT_TYPE,
    "reply-to": h.STOMP_REPLY_TO,
}
_RENAMED_BACK = {nats: stomp for stomp, nats in _RENAMED.items()}
_RESERVED = frozenset(name.lower() for name in _RENAMED_BACK)


def stomp_to_nats_headers(headers: Mapping[str, str]) -> Headers:
    """NATS headers for the (already unescaped) headers of a STOMP frame."""
    out: Headers = {}
    for name, value in headers.items():
        renamed = _NATS_NAMES.get(name)
        if renamed is None:
            if name in DROPPED_HEADERS:
                continue
            renamed = _nats_name(name)
        out[renamed] = [h.encode_value(value)]
    return out


def _nats_name(name: str) -> str:
    renamed = _RENAMED.get(name)
    if renamed is None:
        renamed = h.foreign_header_name(name, _RESERVED)
    if len(_NATS_NAMES) < _NATS_NAMES_MAX:
        _NATS_NAMES[name] = renamed
    return renamed


_NATS_NAMES: dict[str, str] = {}
"""STOMP header names seen before, with their NATS names: a broker sends the same few."""
_NATS_NAMES_MAX = 4096  # bounded: header names can come from untrusted producers


def nats_to_stomp_headers(headers: Mapping[str, list[str]]) -> dict[str, str]:
    """STOMP frame headers for NATS `headers` (the inverse of `stomp_to_nats_headers`)."""
    out: dict[str, str] = {}
    for name, values in headers.items():
        if not values:
            continue
        stomp_name = _RENAMED_BACK.get(name)
        if stomp_name is None:
            stomp_name = h.unescape_header_name(name)
        out[stomp_name] = h.decode_text_value(values[0])
    return out


# --- SEND headers: what a SEND frame takes from a message ------------------------------
# STOMP brokers act on some headers of a SEND (ActiveMQ drops the connection over
# `transformation: jms-map-xml` or `priority: x`; RabbitMQ declares queues from `x-*`
# arguments and refuses a foreign `user-id`). A message from elsewhere must not steer the
# broker, so every such header is listed here, once; any other header passes as it is.

SEND_BY_BRIDGE = frozenset(
    {"destination", "content-length", "content-type", "receipt", "persistent"}
)
"""Written by the bridge on every SEND (content-type from the message's `Stomp-Content-Type`)."""

SEND_NEVER = frozenset(
    {
        # frame control: they belong to another frame or to the connection
        "receipt-id",
        "transaction",
        "subscription",
        "ack",
        "id",
        "heart-beat",
        "host",
        "login",
        "passcode",
        "accept-version",
        "version",
        "session",
        "server",
        # the source broker's id of its copy: RabbitMQ refuses it on SEND, ActiveMQ replaces it
        "message-id",
    }
)
"""Never sent from a message's headers (dropped)."""

SEND_INERT = frozenset({"transformation", "user-id", "durable", "auto-delete", "exclusive"})
"""Broker directives carried inert, renamed with `INERT_PREFIX`, as are names starting with
`SEND_INERT_PREFIXES` (ActiveMQ's scheduler, RabbitMQ's queue arguments)."""
SEND_INERT_PREFIXES = ("AMQ_SCHEDULED_", "x-")
INERT_PREFIX = "Carried-"

SEND_NUMBERS = {
    "priority": 9,
    "expires": 2**63 - 1,
    "expiration": 2**32 - 1,
    "timestamp": 2**63 - 1,
    "JMSXGroupSeq": 2**31 - 1,
}
"""Headers the brokers parse as numbers: passed when the value is a whole number from 0 to
the limit, carried inert otherwise (a value ActiveMQ cannot parse drops the connection)."""


_DROP, _INERT, _CHECK = "drop", "inert", "check"
_SEND_RULES = {
    **dict.fromkeys(SEND_BY_BRIDGE | SEND_NEVER, _DROP),
    **dict.fromkeys(SEND_INERT, _INERT),
    **dict.fromkeys([*SEND_NUMBERS, "reply-to"], _CHECK),
}


def send_headers(
    headers: Mapping[str, list[str]], dialect: str
) -> tuple[str | None, dict[str, str]]:
    """The content-type and the other headers a SEND takes from NATS `headers` (see above).

    ``reply-to`` passes when it is a destination of `dialect`, else it is carried inert.
    """
    carried = nats_to_stomp_headers(headers)
    content_type = carried.pop("content-type", None)
    out: dict[str, str] = {}
    inert: dict[str, str] = {}
    for name, value in carried.items():
        rule = _SEND_RULES.get(name)
        if rule is None:
            if not name.startswith(SEND_INERT_PREFIXES):
                out[name] = value
                continue
            rule = _INERT
        if rule is _DROP:
            continue
        if rule is _CHECK and _valid_on_send(name, value, dialect):
            out[name] = value
        else:
            inert[INERT_PREFIX + name] = value
    for name, value in inert.items():
        out.setdefault(name, value)  # a header the message itself has under that name wins
    return content_type, out


def _valid_on_send(name: str, value: str, dialect: str) -> bool:
    limit = SEND_NUMBERS.get(name)
    if limit is not None:
        return len(value) <= 20 and value.isascii() and value.isdigit() and int(value) <= limit
    try:
        parse_destination(value, dialect)  # reply-to
    except MappingError:
        return False
    return True


_UNESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}


def escape_header(text: str) -> str:
    """STOMP 1.2 escaping of a header name or value (for frames other than CONNECT).

    HeaderError for a NUL: it would end the frame, and STOMP 1.2 has no escape for it.
    """
    if "\x00" in text:
        raise HeaderError(f"a STOMP header cannot hold a NUL character: {text[:100]!r}")
    # The backslash first, so that the escapes written after it are not doubled.
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace(":", "\\c")


def unescape_header(text: str) -> str:
    """Undo STOMP 1.2 escaping; HeaderError on an undefined escape (a fatal error in 1.2)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt not in _UNESCAPES or nxt == "":
            raise HeaderError(f"undefined STOMP escape {text[i : i + 2]!r} at offset {i}")
        out.append(_UNESCAPES[nxt])
        i += 2
    return "".join(out)
