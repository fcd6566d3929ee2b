"""Hostile messages for the conformance suite, and one raw producer per source broker.

Every message carries its id twice: in the payload (``hid=<id>;`` first) and in an
ordinary ``X-Hid`` header (for the cases without a payload), because its addresses and
other headers are the hostile part. A producer returns the ids its broker *refused*
(with the broker's answer): those never entered the bridge and are not counted. A case
a client or protocol cannot express at all is skipped before sending, with the reason
(`unsendable`), so the report says what was not tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import nats
import pika
import pika.exceptions
from kafka import KafkaProducer

HID_HEADER = "X-Hid"
HID = re.compile(rb"hid=([a-z]+>[a-z]+\.\d{3});")
OVER_MAX_PAYLOAD = 100 * 1024  # the suite's routes set max_payload: 64KiB

Header = tuple[str | bytes, Any]


@dataclass(frozen=True)
class Case:
    """One kind of hostile (or ordinary) message, in broker-neutral terms."""

    kind: str
    headers: tuple[Header, ...] = ()
    body: bytes = b"ordinary body"
    empty: bool = False  # no payload at all: the id travels only in X-Hid
    address: str | bytes | None = None  # routing key, Kafka key, destination or subject token
    extra: dict[str, Any] = field(default_factory=dict)  # protocol knobs (AMQP properties ...)
    must_dead_letter: str | None = None  # the Bridge-Reason class it must end with


@dataclass(frozen=True)
class Message:
    """A case as one message of one route."""

    hid: str
    case: Case

    def payload(self) -> bytes:
        return b"" if self.case.empty else b"hid=" + self.hid.encode() + b";" + self.case.body


def common_cases(tag: str) -> list[Case]:
    """Header and payload cases every source sends (each through its own header model)."""
    many = tuple((f"X-Many-{i}", "v" * 40) for i in range(300))
    return [
        Case("ordinary"),
        Case("binary-payload", body=b"\x00\xff\xfe\r\n\x00tail"),
        Case("empty-payload", empty=True),
        Case(
            "payload-over-max_payload",
            body=b"x" * OVER_MAX_PAYLOAD,
            must_dead_letter="PayloadTooLarge",
        ),
        Case("directive-Nats-Rollup", (("Nats-Rollup", "all"),)),
        Case("directive-Nats-Expected-Stream", (("Nats-Expected-Stream", "OTHER"),)),
        Case("directive-Nats-Expected-Last-Sequence", (("Nats-Expected-Last-Sequence", "999"),)),
        Case("directive-Nats-Expected-Last-Msg-Id", (("Nats-Expected-Last-Msg-Id", "nope"),)),
        Case("directive-Nats-TTL", (("Nats-TTL", "1s"),)),
        *[Case("duplicate-Nats-Msg-Id", (("Nats-Msg-Id", f"dup-{tag}"),)) for _ in range(3)],
        Case("Bridge-Hops-not-a-number", (("Bridge-Hops", "abc"),)),
        Case("Bridge-Origin-spoofed", (("Bridge-Origin", "elsewhere/x"),)),
        Case("Bridge-Reason-spoofed", (("Bridge-Reason", "spoofed"),)),
        Case("Bridge-Dead-Letter-Stream-spoofed", (("Bridge-Dead-Letter-Stream", "x"),)),
        Case("Bridge-Buffer-Key-spoofed", (("Bridge-Buffer-Key", "base64:!!"),)),
        Case("Bridge-Buffer-Time-spoofed", (("Bridge-Buffer-Time", "soon"),)),
        # STOMP frame headers that change what a STOMP broker does with a SEND.
        Case("stomp-transformation", (("transformation", "jms-map-xml"),)),
        Case("stomp-destination-header", (("destination", "/queue/elsewhere"),)),
        Case("stomp-expires-header", (("expires", "1"),)),
        Case("stomp-content-length-header", (("content-length", "3"),)),
        Case("stomp-receipt-header", (("receipt", "spoofed"),)),
        Case(
            "stomp-other-frame-headers",
            (
                ("content-type", "text/plain;charset=bogus"),
                ("persistent", "false"),
                ("priority", "9"),
                ("reply-to", "/queue/elsewhere"),
                ("ack", "client"),
                ("id", "x"),
                ("subscription", "x"),
                ("message-id", "m"),
                ("JMSXGroupID", "g"),
            ),
        ),
        Case(
            "amqp-property-headers-spoofed",
            (
                ("Amqp-Priority", "999"),
                ("Amqp-Expiration", "-5"),
                ("Amqp-Timestamp", "x"),
                ("Amqp-Delivery-Mode", "7"),
                ("Amqp-User-Id", "admin"),
                ("Amqp-Header-Types", "{not json"),
            ),
        ),
        Case(
            "source-coordinates-spoofed",
            (
                ("Kafka-Topic", "x y"),
                ("Kafka-Partition", "-1"),
                ("Kafka-Offset", "x"),
                ("Kafka-Key", "base64:!!!"),
                ("Kafka-Header-Order", "[bad"),
                ("Stomp-Destination", "/queue/x"),
                ("Amqp-Routing-Key", "x"),
            ),
        ),
        Case("crlf-injection-in-value", (("X-Inject", "a\r\nNats-Expected-Stream: OTHER"),)),
        Case("nul-in-value", (("X-Nul", "a\x00b"),)),
        Case("c0-c1-controls-in-value", (("X-Ctl", "\x01\x1b[31m\x7f\x85\x9b"),)),
        Case("invalid-utf8-value", (("X-Bin", b"\xff\xfe\xc3("),)),
        Case("invalid-utf8-name", ((b"X-\xff\xfe", "v"),)),
        Case("control-chars-in-names", (("a\r\nb", "v"), ("a b", "v"), ("a:b", "v"))),
        Case("empty-name", (("", "v"),)),
        Case("empty-value", (("X-Empty", ""),)),
        Case("whitespace-value", (("X-Ws", "  padded\t "),)),
        Case("base64-marker-value", (("X-B64", "base64:!!!not"),)),
        Case("percent-names", (("100%", "x"), ("%41", "y"), ("%", "z"))),
        Case("unicode-name-and-value", (("ключ-ü", "значение ✓"),)),
        Case("null-value", (("X-Null", None),)),
        Case("duplicate-names", (("X-Dup", "1"), ("X-Dup", "2"), ("x-dup", "3"))),
        Case("huge-header-value", (("X-Huge", "v" * 30_000),)),
        Case("many-headers", many),
    ]


TAIL = Case("tail-after-hostile", body=b"ordinary, sent after every hostile message")


def messages(route: str, cases: Iterable[Case], first: int = 0) -> list[Message]:
    """`cases` as messages of `route` ("amqp>nats"), numbered from `first`."""
    return [Message(f"{route}.{first + i:03d}", case) for i, case in enumerate(cases)]


def _text(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# ---------------------------------------------------------------------- AMQP


def amqp_cases(tag: str) -> list[Case]:
    """Routing keys and basic properties (pika sends bytes as they are)."""
    return [
        Case("routing-key-invalid-utf8", address=b"\xff\xfe.x"),
        Case("routing-key-crlf", address="a\r\nb"),
        Case("routing-key-nul", address="a\x00b"),
        Case("routing-key-empty", address=""),
        Case("routing-key-empty-tokens", address="a..b."),
        Case("routing-key-wildcards", address="*.>.#"),
        Case("routing-key-unicode-and-space", address="ü ✓.tab\tx"),
        Case("routing-key-255-bytes", address="k" * 255),
        Case("message_id-header-injection", extra={"message_id": "id\r\nNats-Expected-Stream: X"}),
        Case("message_id-invalid-utf8", extra={"message_id": b"\xff\xfe"}),
        *[Case("duplicate-message_id", extra={"message_id": f"order-42-{tag}"}) for _ in range(5)],
        Case(
            "properties-control-chars",
            extra={
                "correlation_id": "c\r\nX: y",
                "type": "t\x00",
                "app_id": "\x1b[31m",
                "reply_to": "r\r\n",
                "content_type": "text/plain\r\nX: y",
            },
        ),
        Case(
            "properties-invalid-utf8",
            extra={"correlation_id": b"\xff\xfe", "content_encoding": b"\xc3(", "type": b"\x80"},
        ),
        Case("timestamp-max", extra={"timestamp": 2**64 - 1}),
        Case("timestamp-zero", extra={"timestamp": 0}),
        Case("nested-table", (("X-Table", {"a": b"\xff", "b": [1, b"\x00", None]}),)),
    ]


def produce_amqp(url: str, exchange: str, batch: Sequence[Message]) -> dict[str, str]:
    """Publish with confirms and `mandatory`; the ids RabbitMQ refused, with its answer."""
    refused: dict[str, str] = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        for message in batch:
            case = message.case
            table: dict[Any, Any] = {HID_HEADER: message.hid}
            table.update(case.headers)
            properties = pika.BasicProperties(delivery_mode=2, headers=table, **case.extra)
            key = "ok.rk" if case.address is None else case.address
            try:
                channel.basic_publish(exchange, key, message.payload(), properties, mandatory=True)  # type: ignore[arg-type]
            except (pika.exceptions.AMQPError, ValueError, TypeError) as exc:
                refused[message.hid] = f"{type(exc).__name__}: {exc}"
                if not channel.is_open:
                    if not connection.is_open:
                        connection = pika.BlockingConnection(pika.URLParameters(url))
                    channel = connection.channel()
                    channel.confirm_delivery()
    finally:
        if connection.is_open:
            connection.close()
    return refused


# ---------------------------------------------------------------------- Kafka


class _RawName(str):
    """A header name kafka-python writes as `raw` (it takes str names only, as UTF-8).

    Kafka itself stores any bytes; other clients (librdkafka, Java) can write them.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawName:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def kafka_cases() -> list[Case]:
    """Keys (the Kafka source's address) and tombstones."""
    return [
        Case("key-null", extra={"key": None}),
        Case("key-empty", extra={"key": b""}),
        Case("key-invalid-utf8", extra={"key": b"\xff\xfe"}),
        Case("key-control-chars", extra={"key": b"a\r\nb\x00c"}),
        Case("key-huge", extra={"key": b"k" * 10_000}),
        Case("tombstone", empty=True, extra={"key": b"tomb", "tombstone": True}),
    ]


def kafka_unsendable(case: Case) -> str | None:
    """Why kafka-python cannot send `case`, or None."""
    if any(value is None for _, value in case.headers):
        return "kafka-python writes a None header value as b'' (no null header values)"
    if any(isinstance(value, dict) for _, value in case.headers):
        return "Kafka header values are bytes"
    return None


def produce_kafka(bootstrap: str, topic: str, batch: Sequence[Message]) -> dict[str, str]:
    """Produce with acks=all; the ids Kafka refused."""
    refused: dict[str, str] = {}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2**21)
    try:
        sent = []
        for message in batch:
            case = message.case
            headers = [(HID_HEADER, message.hid.encode())]
            for name, value in case.headers:
                raw_name = _RawName(name) if isinstance(name, bytes) else name
                headers.append((raw_name, _text(value)))
            value = None if case.extra.get("tombstone") else message.payload()
            key = case.extra.get("key", b"k")
            try:
                future = producer.send(topic, value=value, key=key, headers=headers)
            except (ValueError, TypeError) as exc:
                refused[message.hid] = f"{type(exc).__name__}: {exc}"
                continue
            sent.append((message.hid, future))
        for hid, future in sent:
            try:
                future.get(timeout=30)
            except Exception as exc:  # any refusal: the record is not in Kafka
                refused[hid] = f"{type(exc).__name__}: {exc}"
    finally:
        producer.close(timeout=10)
    return refused


# ---------------------------------------------------------------------- STOMP


def _stomp_escape(value: bytes) -> bytes:
    """STOMP 1.2 header escaping (a NUL byte has none: it goes as it is)."""
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\r", b"\\r")
        .replace(b"\n", b"\\n")
        .replace(b":", b"\\c")
    )


class RawStomp:
    """A STOMP 1.2 connection on a plain socket: any bytes in any header, frame by frame.

    stomp.py writes str headers as UTF-8 only; the suite needs invalid UTF-8 too.
    """

    def __init__(self, url: str, login: str, passcode: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 61613)
        self.login, self.passcode = login, passcode
        self._buffer = b""
        self.sock = self._open()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        self.sock = sock
        self._buffer = b""
        self.write(
            b"CONNECT",
            [
                (b"accept-version", b"1.2"),
                (b"host", b"/"),
                (b"login", self.login.encode()),
                (b"passcode", self.passcode.encode()),
                (b"heart-beat", b"0,0"),
            ],
        )
        command, headers, _ = self.read(30)
        if command != b"CONNECTED":
            raise ConnectionError(f"STOMP CONNECT refused: {command!r} {headers!r}")
        return sock

    def write(
        self, command: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes = b""
    ) -> None:
        lines = [command] + [_stomp_escape(n) + b":" + _stomp_escape(v) for n, v in headers]
        self.sock.sendall(b"\n".join(lines) + b"\n\n" + body + b"\x00")

    def read(self, timeout: float) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        """The next frame (heart-beat newlines skipped); socket.timeout when none comes."""
        self.sock.settimeout(timeout)
        while True:
            self._buffer = self._buffer.lstrip(b"\r\n")
            end = self._buffer.find(b"\n\n")
            if end >= 0:
                head = self._buffer[:end].split(b"\n")
                headers = [tuple(line.split(b":", 1)) for line in head[1:] if b":" in line]
                length = next((int(v) for n, v in headers if n == b"content-length"), None)
                start = end + 2
                stop = self._buffer.find(b"\x00", start) if length is None else start + length
                if stop >= 0 and len(self._buffer) > stop:
                    body = self._buffer[start:stop]
                    self._buffer = self._buffer[stop + 1 :]
                    return head[0].rstrip(b"\r"), headers, body  # type: ignore[return-value]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("STOMP connection closed by the broker")
            self._buffer += chunk

    def send(
        self, destination: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> str | None:
        """SEND with a receipt; None when receipted, else the broker's ERROR (reconnects)."""
        receipt = uuid.uuid4().hex.encode()
        frame = [
            (b"destination", destination),
            (b"receipt", receipt),
            (b"content-length", str(len(body)).encode()),
            (b"persistent", b"true"),
            *headers,
        ]
        try:
            self.write(b"SEND", frame, body)
            command, answer, text = self.read(30)
        except (OSError, ConnectionError) as exc:
            self.close()
            self._open()
            return f"connection lost: {exc}"
        if command == b"RECEIPT" and dict(answer).get(b"receipt-id") == receipt:
            return None
        self.close()
        self._open()  # ActiveMQ may keep the connection after an ERROR: start clean anyway
        return f"{command.decode(errors='replace')}: {dict(answer)!r} {text[:200]!r}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def stomp_cases() -> list[Case]:
    """Destinations (the suffix after the route's queue prefix)."""
    return [
        Case("destination-invalid-utf8", address=b"\xff\xfe"),
        Case("destination-unicode-and-space", address="ü ✓ x"),
        Case("destination-empty-token", address="a..b"),
        Case("destination-crlf", address="a\r\nb"),
        Case("destination-wildcard", address="*"),
        # The common 30 KB header exceeds ActiveMQ's header limit (it answers ERROR "The
        # maximum header length was exceeded"): a large one it takes.
        Case("large-header-value-8k", (("X-Large", "v" * 8000),)),
    ]


def stomp_unsendable(case: Case) -> str | None:
    """Why a STOMP frame cannot carry `case`, or None."""
    if case.kind.startswith("stomp-") and case.kind != "stomp-transformation":
        return "ActiveMQ applies frame headers to the SEND itself (expires: 1 expires it unread)"
    if any(value is None or isinstance(value, dict) for _, value in case.headers):
        return "STOMP header values are strings"
    if any(b"\x00" in _text(name) + _text(value) for name, value in case.headers):
        # A NUL ends a frame: RabbitMQ cuts the SEND there and stores what came before.
        return "STOMP 1.2 has no escape for NUL in a header"
    return None


def produce_stomp(
    url: str, login: str, passcode: str, prefix: str, batch: Sequence[Message]
) -> dict[str, str]:
    """SEND each to `prefix` + "." + its address (default "ok"); the ids the broker refused."""
    refused: dict[str, str] = {}
    client = RawStomp(url, login, passcode)
    try:
        for message in batch:
            case = message.case
            suffix = "ok" if case.address is None else case.address
            headers = [(HID_HEADER.encode(), message.hid.encode())]
            headers += [(_text(n), _text(v)) for n, v in case.headers]
            error = client.send(prefix.encode() + b"." + _text(suffix), headers, message.payload())
            if error is not None:
                refused[message.hid] = error
    finally:
        client.close()
    return refused


# ---------------------------------------------------------------------- NATS


def nats_cases() -> list[Case]:
    """Subject tokens (the JetStream source's address) and header-block oddities."""
    return [
        Case("subject-invalid-utf8", address=b"\xff\xfe"),
        Case("subject-unicode", address="ü✓"),
        Case("subject-percent-and-specials", address="a%2Fb$~#"),
        Case("status-line-in-published-headers", extra={"status": b" 503 No Responders"}),
    ]


def nats_unsendable(case: Case) -> str | None:
    """Why a NATS header block cannot carry `case`, or None."""
    for name, value in case.headers:
        if isinstance(value, dict):
            return "NATS header values are text"
        if any(c in _text(name) + _text(value or "") for c in (b"\r", b"\n")):
            return "a NATS header line cannot hold CR or LF (the protocol has no escape)"
        if name == "" or name == b"":
            return "a NATS header line needs a name"
    return None


def _header_block(message: Message) -> bytes:
    """NATS/1.0 header block; a None value is a line without a colon."""
    case = message.case
    lines = [
        b"NATS/1.0" + case.extra.get("status", b""),
        HID_HEADER.encode() + b": " + message.hid.encode(),
    ]
    for name, value in case.headers:
        lines.append(_text(name) if value is None else _text(name) + b": " + _text(value))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _produce_nats(url: str, prefix: str, batch: Sequence[Message]) -> dict[str, str]:
    refused: dict[str, str] = {}
    nc = await nats.connect(url, allow_reconnect=False)
    inbox = f"_INBOX.hostile.{uuid.uuid4().hex}"
    answers: dict[str, bytes] = {}
    done = asyncio.Event()

    async def on_ack(msg: Any) -> None:
        answers[msg.subject.rsplit(".", 1)[1]] = msg.data
        if len(answers) == len(batch):
            done.set()

    await nc.subscribe(inbox + ".*", cb=on_ack)
    try:
        for n, message in enumerate(batch):
            token = "ok" if message.case.address is None else message.case.address
            subject = prefix.encode() + b"." + _text(token)
            hdr, payload = _header_block(message), message.payload()
            reply = f"{inbox}.{n}".encode()
            line = b"HPUB %s %s %d %d\r\n" % (subject, reply, len(hdr), len(hdr) + len(payload))
            # nats-py checks subjects and header names and strips values: write the
            # protocol line ourselves, on its connection.
            await nc._send_command(line + hdr + payload + b"\r\n")
        await nc.flush(timeout=10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 15)
    finally:
        await nc.close()
    for n, message in enumerate(batch):
        raw = answers.get(str(n))
        if raw is None:
            refused[message.hid] = "no PubAck from JetStream"
            continue
        ack = json.loads(raw)
        if "error" in ack:
            refused[message.hid] = f"JetStream refused it: {ack['error']}"
        elif ack.get("duplicate"):
            refused[message.hid] = "JetStream's own dedup on the source stream (Nats-Msg-Id)"
    return refused


def produce_nats(url: str, prefix: str, batch: Sequence[Message]) -> dict[str, str]:
    """Publish to JetStream subjects `prefix`.<address>; the ids JetStream refused."""
    return asyncio.run(_produce_nats(url, prefix, batch))
