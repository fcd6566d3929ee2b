"""One nats-py connection per source or sink: connect options, state, JetStream streams.

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
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.js.api import StreamConfig, StreamInfo
from nats.js.manager import JetStreamManager

from natsbridge.bridge.declare import Declaration, log_created
from natsbridge.bridge.errors import ConnectionLost, MessageRejected, PermanentError
from natsbridge.bridge.tls import tls_context
from natsbridge.connectors.nats.config import NatsConnection
from natsbridge.connectors.nats.driver import NatsClient
from natsbridge.connectors.nats.errors import StreamMissing, translate, translate_exception

log = logging.getLogger("natsbridge.connectors.nats")

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RECONNECT_WAIT_S = 1.0
DEFAULT_MAX_RECONNECT_ATTEMPTS = -1  # forever: nats-py keeps subscriptions across reconnects
DEFAULT_CONNECT_ATTEMPTS = 1  # per server on the first connect (so 2 tries each)
DEFAULT_PING_INTERVAL_S = 20  # a dead server is noticed within ~2 pings
DEFAULT_READY_WAIT_S = 5.0  # how long a send waits for a reconnect before ConnectionLost
DEFAULT_PENDING_SIZE_BYTES = 8 * 1024 * 1024  # nats-py's outbound buffer

Callback = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- connection


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
        options["tls"] = tls_context(connection.tls, "nats")
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


async def ensure_stream(
    jsm: JetStreamManager,
    declaration: Declaration,
    context: str,
    config: Callable[[], StreamConfig],
) -> StreamInfo:
    """The info of the declared JetStream stream, created as `config()` says when missing.

    When the declaration may not create it, a missing stream is a StreamMissing error
    naming the key (``to.jetstream.create``). A stream created here is logged once with
    its settings; one that another bridge created between the look-up and the create is
    fine.
    """
    name = declaration.name
    try:
        with translate(context):
            return await jsm.stream_info(name)
    except StreamMissing:
        if not declaration.create:
            raise StreamMissing(
                f"{context} does not exist and {declaration.why_not_created}: create the "
                "stream or set create: true"
            ) from None
    stream = config()
    try:
        with translate(f"{context}: creating it with subjects {stream.subjects}"):
            info = await jsm.add_stream(stream)
    except MessageRejected as exc:
        with contextlib.suppress(StreamMissing), translate(context):
            return await jsm.stream_info(name)
        raise PermanentError(str(exc)) from exc
    log_created(declaration)
    return info
