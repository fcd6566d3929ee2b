"""One nats-py connection per source or sink: connect options, state, and header conversion.

Why one connection per source/sink and not one per configured connection: each route
endpoint then has its own outbound buffer, its own slow-consumer accounting, its own
disconnect callbacks (a JetStream sink fails its in-flight PubAcks the moment *its*
connection drops) and a `close()` that cannot pull the rug from under another route.
NATS servers handle thousands of connections; a bridge has a few dozen routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
import nats.js.api
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.command import hpub_cmd, pub_cmd

from natsbridge.bridge.config.model import Tls
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import ConnectionLost, HeaderError, PermanentError
from natsbridge.connectors.nats.config import NatsConnection
from natsbridge.connectors.nats.errors import translate, translate_exception
from natsbridge.mappings.headers import validate_headers

log = logging.getLogger("natsbridge.connectors.nats")

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RECONNECT_WAIT_S = 1.0
DEFAULT_MAX_RECONNECT_ATTEMPTS = -1  # forever: nats-py keeps subscriptions across reconnects
DEFAULT_CONNECT_ATTEMPTS = 1  # per server on the first connect (so 2 tries each)
DEFAULT_PING_INTERVAL_S = 20  # a dead server is noticed within ~2 pings
DEFAULT_READY_WAIT_S = 5.0  # how long a send waits for a reconnect before ConnectionLost
DEFAULT_PENDING_SIZE_BYTES = 8 * 1024 * 1024  # nats-py's outbound buffer

Callback = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- headers


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


RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
"""Called on the read loop with a message as received: subject, reply, data, header block."""


async def _ignore(msg: Msg) -> None:
    raise AssertionError("a raw subscription's messages never reach nats-py's callback")


class NatsClient(Client):
    """nats-py's client: received headers parsed with `MultiHeaders` (repeats kept), a
    `HeaderBlock` published as it is, and raw subscriptions (`subscribe_raw`).

    These hook into nats-py internals (`_parse_header_lines`, `_send_publish`,
    `_process_msg`); the connector tests cover them against the nats-py version installed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}

    async def subscribe_raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe with `handler` called synchronously for each message, as received.

        For replies the bridge reads itself (PubAcks): no Msg object, no per-subscription
        queue and task per message. nats-py still owns the subscription (SUB, resubscribe
        after a reconnect, unsubscribe).
        """
        sub = await self.subscribe(subject, cb=_ignore)
        self._raw_handlers[sub._id] = handler
        return sub

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)

    async def publish_many(
        self, messages: Sequence[tuple[str, str, HeaderBlock | None, bytes]]
    ) -> None:
        """Publish (subject, reply, header block, payload) messages, in order, as one write.

        One PUB or HPUB command each, queued as one buffer, instead of a `publish()` call
        (its checks, command and buffer append) per message: for JetStream acks and for
        the JetStream sink's windows. The caller has checked payload sizes. Raises as
        `publish()` does when closed or draining, or while reconnecting with the pending
        buffer full.
        """
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = 0
        commands = []
        for subject, reply, headers, payload in messages:
            if not subject:
                raise nats.errors.BadSubjectError
            if headers is None:
                commands.append(pub_cmd(subject, reply, payload))
            else:
                commands.append(hpub_cmd(subject, reply, headers, payload))
            size += len(payload)
        command = b"".join(commands)
        if not self.is_connected and (
            self._max_pending_size <= 0
            or len(command) + self._pending_data_size > self._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        self.stats["out_msgs"] += len(commands)
        self.stats["out_bytes"] += size
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return MultiHeaders.parse(raw)

    # nats-py decodes subjects and status lines strictly inside its read loop: read them
    # as `subject_text` does, and a status line that is not UTF-8 leniently.

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> Msg:
        return self.msg_class(
            subject=subject_text(subject),
            reply=subject_text(reply),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        try:
            return await super()._process_headers(headers)  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            code, description, lines = read_header_block(headers)
            parsed = MultiHeaders()
            parsed.all = lines
            for name, values in lines.items():
                dict.__setitem__(parsed, name, values[-1])
            if code.isdigit():
                dict.__setitem__(parsed, nats.js.api.Header.STATUS.value, code)
                dict.__setitem__(parsed, nats.js.api.Header.DESCRIPTION.value, description)
            return parsed

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: Any
    ) -> None:
        if not isinstance(headers, HeaderBlock):
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if not subject:
            raise nats.errors.BadSubjectError
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


# ---------------------------------------------------------------- connection


def tls_context(tls: Tls) -> ssl.SSLContext:
    """An SSLContext from the connection's `tls` section (CA, client cert for mTLS, verify)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_options(connection: NatsConnection, client_name: str) -> dict[str, Any]:
    """nats-py `connect()` keyword arguments for `connection` (secrets unwrapped here only)."""
    options: dict[str, Any] = {
        "servers": list(connection.servers),
        "name": client_name,
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
        "reconnect_time_wait": DEFAULT_RECONNECT_WAIT_S,
        "max_reconnect_attempts": DEFAULT_MAX_RECONNECT_ATTEMPTS,
        "ping_interval": DEFAULT_PING_INTERVAL_S,
        "pending_size": DEFAULT_PENDING_SIZE_BYTES,
    }
    if connection.token is not None:
        options["token"] = connection.token.get_secret_value()
    if connection.user is not None:
        options["user"] = connection.user
    if connection.password is not None:
        options["password"] = connection.password.get_secret_value()
    if connection.nkey_seed_file or connection.creds_file:
        try:
            import nkeys  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            raise PermanentError(
                "nkey_seed_file and creds_file need the 'nkeys' package "
                "(pip install 'nats-py[nkeys]')"
            ) from None
        if connection.nkey_seed_file:
            options["nkeys_seed"] = connection.nkey_seed_file
        if connection.creds_file:
            options["user_credentials"] = connection.creds_file
    if connection.tls is not None:
        options["tls"] = tls_context(connection.tls)
    elif any(url.startswith(("tls://", "wss://")) for url in connection.servers):
        options["tls"] = ssl.create_default_context()
    return options


class NatsLink:
    """One open nats-py connection and what a source or sink needs to know about it.

    `ready()` gives the client when it is connected, waits (bounded) while nats-py
    reconnects, and raises ConnectionLost when it does not come back in time or the
    connection is closed for good.
    """

    def __init__(self, connection_name: str, client: NatsClient, client_name: str = "") -> None:
        self.connection_name = connection_name
        self.client_name = client_name  # <bridge id>:<route>:source|sink, for the logs
        self.client = client
        self.connected = asyncio.Event()
        self.connected.set()
        self.closed = False
        self.slow_consumer_drops = 0
        self.errors: list[Exception] = []  # reported while connecting
        self.on_disconnect: list[Callback] = []
        self.on_close: list[Callback] = []

    @classmethod
    async def open(
        cls, connection_name: str, connection: NatsConnection, client_name: str
    ) -> NatsLink:
        """Connect; ConnectionLost when no server answers, PermanentError when refused."""
        client = NatsClient()
        link = cls(connection_name, client, client_name)
        options = connect_options(connection, client_name)
        context = f"connecting to NATS connection '{connection_name}'"
        # The first connect tries each server twice and gives up (the runtime retries with
        # back-off and sees why); once connected, nats-py reconnects forever by itself.
        options["max_reconnect_attempts"] = DEFAULT_CONNECT_ATTEMPTS
        try:
            with translate(context):
                await client.connect(
                    **options,
                    error_cb=link._error,
                    disconnected_cb=link._disconnected,
                    reconnected_cb=link._reconnected,
                    closed_cb=link._closed,
                )
        except ConnectionLost:
            # Why no server took us is in the errors reported on the way (the last one may
            # just be the reset that followed an "Authorization Violation").
            for cause in reversed(link.errors):
                refused = translate_exception(cause, context)
                if isinstance(refused, PermanentError):
                    raise refused from cause
            raise
        link.errors.clear()
        client.options["max_reconnect_attempts"] = DEFAULT_MAX_RECONNECT_ATTEMPTS
        return link

    @property
    def max_payload(self) -> int:
        """The payload limit the server announced (headers and payload together)."""
        return int(self.client.max_payload)

    async def ready(self, wait: float | None = None) -> NatsClient:
        """The client, once connected; ConnectionLost if closed or not back within `wait` s."""
        client = self.client
        if wait is None:
            wait = DEFAULT_READY_WAIT_S
        if client.is_connected:
            return client
        if self.closed or client.is_closed:
            raise ConnectionLost(f"NATS connection '{self.connection_name}' is closed")
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
        except TimeoutError:
            raise ConnectionLost(
                f"NATS connection '{self.connection_name}' is reconnecting "
                f"(not back within {wait:g}s)"
            ) from None
        if not client.is_connected:
            raise ConnectionLost(f"NATS connection '{self.connection_name}' is closed")
        return client

    async def close(self) -> None:
        """Flush what is buffered (bounded) and close. Idempotent."""
        client = self.client
        self.closed = True
        if client.is_closed:
            return
        if client.is_connected:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await client.flush(timeout=int(DEFAULT_READY_WAIT_S))
        with contextlib.suppress(nats.errors.Error, OSError):
            await client.close()

    # nats-py callbacks

    async def _error(self, exc: Exception) -> None:
        if not self.client.is_connected and len(self.errors) < 32:
            self.errors.append(exc)
        if isinstance(exc, nats.errors.SlowConsumerError):
            # The bridge did not keep up with a core NATS subject: nats-py dropped a message.
            self.slow_consumer_drops += 1
            if (
                self.slow_consumer_drops in (1, 10, 100, 1000)
                or self.slow_consumer_drops % 10000 == 0
            ):
                log.warning(
                    "NATS connection '%s' (%s): slow consumer on %s, %d messages dropped so far",
                    self.connection_name,
                    self.client_name,
                    exc.subject,
                    self.slow_consumer_drops,
                )
            return
        log.warning("NATS connection '%s' (%s): %s", self.connection_name, self.client_name, exc)

    async def _disconnected(self) -> None:
        self.connected.clear()
        if not self.closed:
            name, client = self.connection_name, self.client_name
            log.warning("NATS connection '%s' (%s) lost; reconnecting", name, client)
        for callback in self.on_disconnect:
            await callback()

    async def _reconnected(self) -> None:
        log.info("NATS connection '%s' (%s) re-established", self.connection_name, self.client_name)
        self.connected.set()

    async def _closed(self) -> None:
        self.closed = True
        self.connected.set()  # wake waiters: ready() now sees the closed client
        for callback in self.on_close:
            await callback()
