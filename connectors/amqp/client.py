"""One pika SelectConnection with one channel, run by a thread of its own.

Threading model: every source and every sink owns one `AmqpClient`, that is one AMQP
connection whose pika I/O loop (SelectConnection) runs on a dedicated daemon thread.
All pika calls happen on that thread; other threads hand it work through
`call()` (pika's `ioloop.add_callback_threadsafe`, the one thread-safe entry point)
and it hands results to the asyncio loop through `post()` (`loop.call_soon_threadsafe`).
Owners batch both ways so that a crossing costs one wake-up per batch, not per message.

Why SelectConnection rather than BlockingConnection: the sink must pipeline publisher
confirms (BlockingChannel waits for each confirm, about 1.5k msg/s here) and the source
must consume while acks arrive from another thread; pika's callback API does both on
one thread without polling. Why a thread rather than pika's AsyncioConnection on the
bridge's loop: the design keeps each broker client off the event loop, so that pika's
frame parsing and a slow broker never delay other routes' timers and I/O.
Why one connection per source/sink: RabbitMQ throttles publishing connections
(flow control, resource alarms) and a channel error closes the channel, so routes and
directions are kept apart and one route's trouble never stalls another.

Lifecycle: `open(setup)` starts the thread, connects, opens a channel and runs the
owner's `setup` steps (declares, binds, qos, consume…) on the pika thread; it returns
when they are done. When the connection ends for any reason the thread stops and
`on_end(error)` runs on the asyncio loop, after every result the thread posted before;
from then on the pika thread touches nothing, so the owner may fail what is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel

from natsbridge.bridge.declare import Declaration, log_created
from natsbridge.bridge.errors import BridgeError, BridgeTimeout, ConnectionLost, PermanentError
from natsbridge.bridge.secrets import redact, redact_url
from natsbridge.bridge.threads import settle, spawn
from natsbridge.bridge.tls import tls_context
from natsbridge.connectors.amqp.config import AmqpConnection
from natsbridge.connectors.amqp.errors import AmqpNotFound, translate

log = logging.getLogger("natsbridge.amqp")

DEFAULT_CLOSE_TIMEOUT_S = 5.0
"""How long `close()` waits for the broker to answer connection.close, in seconds."""

DEFAULT_USER = "guest"
"""The user name pika logs in with when the URL names none."""

Op = Callable[[Callable[..., None]], None]
"""Starts one AMQP operation on the pika thread; it calls its argument with the result."""
Steps = Generator[Op, Any, None]
"""A setup routine: yields operations, receives their results, may catch their errors."""


class AmqpClient:
    """One AMQP connection and channel on a dedicated pika I/O thread."""

    def __init__(self, config: AmqpConnection, purpose: str) -> None:
        self.config = config
        self.purpose = purpose
        self.where = redact_url(config.url)
        self.connection: SelectConnection | None = None
        self.channel: Channel | None = None
        self.error: BridgeError | None = None
        """Why the connection ended (set on the pika thread, before it stops)."""
        self.on_end: Callable[[BridgeError], None] = lambda error: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._opened: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] | None = None
        self._steps: Steps | None = None
        self._closing = False

    # ------------------------------------------------------------ any thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that opened this client."""
        assert self._loop is not None, "client not opened"
        return self._loop

    def call(self, fn: Callable[[], None]) -> bool:
        """Run `fn` on the pika thread soon; False when the connection has already ended."""
        connection = self.connection
        if connection is None or self.error is not None:
            return False
        try:
            connection.ioloop.add_callback_threadsafe(fn)
        except Exception:  # the I/O loop is closing: on_end will clean up
            return False
        return True

    def soon(self, fn: Callable[[], None]) -> None:
        """On the pika thread: run `fn` once pika has dispatched what it has just read."""
        assert self.connection is not None
        self.connection.ioloop.call_later(0, fn)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the asyncio loop soon (from the pika thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------ asyncio side

    async def open(self, setup: Callable[[AmqpClient], Steps]) -> None:
        """Connect, open a channel and run `setup`; raise a bridge error on failure."""
        self._loop = asyncio.get_running_loop()
        params = connection_parameters(self.config, f"natsbridge {self.purpose}")
        self._opened = self._loop.create_future()
        self._ended = self._loop.create_future()
        self._thread = spawn(self._run, f"amqp {self.purpose}", params, setup)
        # pika's stack_timeout bounds the connection handshake; setup gets as long again.
        timeout = 2 * self.config.connect_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        except TimeoutError:
            await self.close()
            raise BridgeTimeout(
                f"amqp: {self.where}: not connected and set up after {timeout:g}s"
            ) from None
        except BaseException:
            await self.close()
            raise
        log.info("amqp %s: connected to %s", self.purpose, self.where)

    async def close(self) -> None:
        """Close the connection (bounded wait) and let the thread end. Idempotent."""
        ended = self._ended
        if ended is None:
            return
        self._closing = True
        self.call(self._close_on_thread)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ended), DEFAULT_CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------ pika thread

    def _run(self, params: pika.URLParameters, setup: Callable[[AmqpClient], Steps]) -> None:
        error: BridgeError = ConnectionLost("amqp: connection ended")
        connection = None
        try:
            connection = SelectConnection(
                params,
                on_open_callback=lambda _conn: self._open_channel(lambda: self._setup(setup)),
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
            self.connection = connection
            connection.ioloop.start()
        except BaseException as exc:
            self.error = self.error or translate(exc)
        finally:
            error = self.error = self.error or error
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.ioloop.close()
            self.post(self._end, error)

    def _setup(self, setup: Callable[[AmqpClient], Steps]) -> None:
        self._steps = setup(self)
        self._advance(None)

    def _advance(self, result: Any, error: BaseException | None = None) -> None:
        """Run the setup routine up to its next operation, feeding it `result` or `error`."""
        steps = self._steps
        if steps is None:
            return
        try:
            op = steps.send(result) if error is None else steps.throw(translate(error))
        except StopIteration:
            self._steps = None
            self.post(_resolve, self._opened)
            return
        except BaseException as exc:
            self._steps = None
            self._fail(translate(exc))
            return
        try:
            op(self._advance)
        except BaseException as exc:
            self._advance(None, exc)

    def _open_channel(self, then: Callable[[], None]) -> None:
        def opened(channel: Channel) -> None:
            self.channel = channel
            channel.add_on_close_callback(self._on_channel_closed)
            then()

        assert self.connection is not None
        self.connection.channel(on_open_callback=opened)

    def reopen_channel(self, done: Callable[..., None]) -> None:
        """Op: open a fresh channel (after a broker closed the last one) as `self.channel`."""
        self._open_channel(lambda: done(self.channel))

    def ensure_exchange(self, declaration: Declaration) -> Steps:
        """Steps: declare the exchange (durable, of its type) unless it already exists."""
        name, kind = declaration.name, str(declaration.settings["type"])
        try:
            yield lambda done: self.ch.exchange_declare(name, passive=True, callback=done)
        except AmqpNotFound:
            yield self.reopen_channel
            yield lambda done: self.ch.exchange_declare(
                name, exchange_type=kind, durable=True, callback=done
            )
            log_created(declaration)

    def ensure_queue(self, declaration: Declaration) -> Steps:
        """Steps: declare the queue (durable) unless it already exists, whatever its args."""
        name = declaration.name
        try:
            yield lambda done: self.ch.queue_declare(name, passive=True, callback=done)
        except AmqpNotFound:
            yield self.reopen_channel
            yield lambda done: self.ch.queue_declare(name, durable=True, callback=done)
            log_created(declaration)

    @property
    def ch(self) -> Channel:
        assert self.channel is not None
        return self.channel

    def fail(self, error: BridgeError) -> None:
        """On the pika thread: end the connection because of `error` (reported by on_end)."""
        self._fail(error)

    def _fail(self, error: BridgeError) -> None:
        if self.error is None:
            self.error = error
        self._close_on_thread()

    def _close_on_thread(self) -> None:
        connection = self.connection
        if connection is None:
            return
        if connection.is_closed:
            connection.ioloop.stop()
        elif not connection.is_closing:
            try:
                connection.close()
            except Exception:
                connection.ioloop.stop()

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        if channel is not self.channel:
            return  # a channel we already replaced (after a passive declare failed)
        if self._steps is not None:
            self._advance(None, reason)  # setup may recover, e.g. declare what was missing
            return
        connection = self.connection
        if self._closing or connection is None or connection.is_closing or connection.is_closed:
            return
        self._fail(translate(reason))

    def _on_open_error(self, _connection: Any, exc: BaseException) -> None:
        if self.error is None:
            self.error = translate(exc)
        self._stop()

    def _on_closed(self, _connection: Any, reason: BaseException) -> None:
        if self.error is None:
            if self._closing:
                self.error = ConnectionLost("amqp: connection closed by the bridge")
            else:
                self.error = translate(reason)
                log.warning("amqp %s: connection to %s lost: %s", self.purpose, self.where, reason)
        self._stop()

    def _stop(self) -> None:
        assert self.connection is not None
        self.connection.ioloop.stop()

    # ------------------------------------------------------------ asyncio loop again

    def _end(self, error: BridgeError) -> None:
        """On the loop, after everything the thread posted: report the end once."""
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(error)
            self._opened.exception()  # retrieved here: open() may have stopped waiting
        try:
            self.on_end(error)
        finally:
            _resolve(self._ended)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None:
        settle(future)


def connection_parameters(config: AmqpConnection, name: str) -> pika.URLParameters:
    """pika's parameters for `config`: URL (host, port, credentials, vhost), TLS, timeouts."""
    try:
        params = pika.URLParameters(config.url)
    except ValueError as exc:
        where = redact_url(config.url)
        raise PermanentError(f"amqp: invalid URL {where}: {redact(str(exc))}") from None
    params.heartbeat = 0 if config.heartbeat == 0 else max(1, round(config.heartbeat))
    params.socket_timeout = config.connect_timeout
    params.stack_timeout = config.connect_timeout
    params.connection_attempts = 1  # the runtime retries, with back-off
    params.client_properties = {"connection_name": name, "product": "natsbridge"}
    if config.tls is not None or config.url.startswith("amqps://"):
        params.ssl_options = pika.SSLOptions(
            tls_context(config.tls, "amqp"), server_hostname=params.host
        )
    return params


def url_user(url: str) -> str:
    """The user name an AMQP URL logs in with (pika's default: guest)."""
    try:
        username = urlsplit(url).username
    except ValueError:
        return DEFAULT_USER
    return unquote(username) if username is not None else DEFAULT_USER
