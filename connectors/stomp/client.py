"""One STOMP 1.2 connection: stomp.py's receiver thread in, a writer thread of ours out.

Threading model: every source and every sink owns one `StompClient`, that is one
stomp.py `StompConnection12` (``auto_decode=False``: bodies stay bytes). Three threads
serve it, none of them the event loop:

* stomp.py's receiver thread reads from the socket; our splitter and parser
  (connectors.stomp.message) make frames of it: MESSAGE frames go to the owner's `on_message`;
  RECEIPT and ERROR frames settle the futures `expect()` handed out. Settled futures
  cross to the asyncio loop in batches: one `call_soon_threadsafe` per burst of frames,
  not per frame.
* our writer thread takes the frames `write()` queued (from any thread, usually the
  loop), joins whatever is queued into one buffer and writes it with one ``sendall``
  (through stomp.py's transport, which serialises it with the heart-beats).
* stomp.py's heart-beat thread sends heart-beats and watches the broker's: when none
  arrived for 1.5 intervals it closes the socket (``on_heartbeat_timeout``).

A loop-side watchdog backs the heart-beat thread up: stomp.py's thread can be stuck
behind a ``sendall`` to a broker that stopped reading, and then nothing would notice.

Lifecycle: `open()` connects (TCP, TLS, CONNECT/CONNECTED) within
`DEFAULT_CONNECT_TIMEOUT_S`; from then on the owner writes frames. When the connection
ends for any reason (`close()`, a socket error, a lost heart-beat, an ERROR frame that is
not about one receipt) every pending receipt fails and `on_end(error)` runs once on the
loop; afterwards `write()` does nothing. `close()` sends DISCONNECT with a receipt after
everything already queued (so acks already given reach the broker), waits for it
(bounded) and closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import stomp  # type: ignore[import-untyped]
from stomp.utils import Frame  # type: ignore[import-untyped]

from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.secrets import redact_url
from natsbridge.bridge.threads import Completions, settle, spawn
from natsbridge.bridge.tls import tls_context
from natsbridge.connectors.stomp.config import StompConnection
from natsbridge.connectors.stomp.driver import read_with_our_parser
from natsbridge.connectors.stomp.errors import from_error_frame, translate, translating

log = logging.getLogger("natsbridge.stomp")

DEFAULT_PORT = 61613
"""Port of ``stomp://`` URLs without one (the STOMP default of both brokers)."""
DEFAULT_TLS_PORT = 61614
"""Port of ``stomp+ssl://`` URLs without one (RabbitMQ's; ActiveMQ's examples use 61612)."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""TCP connect, TLS handshake and CONNECT/CONNECTED, in seconds."""
DEFAULT_CLOSE_TIMEOUT_S = 5.0
"""How long `close()` waits for the DISCONNECT receipt and the receiver thread, in seconds."""
HEARTBEAT_GRACE = 1.5
"""A broker heart-beat may be this many intervals late before the connection counts as lost."""
WATCHDOG_FACTOR = 2.5
"""The loop-side watchdog acts after this many intervals of silence (see module doc)."""
MAX_WRITE_BYTES = 256 * 1024
"""Frames joined into one ``sendall`` at most (more waits for the next one)."""


class _QuietSendErrors(logging.Filter):
    """Drop stomp.py's traceback for a write to a closed socket: we report it as ConnectionLost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "error sending frame"


logging.getLogger("stomp.py").addFilter(_QuietSendErrors())


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a STOMP URL points: host, port, and whether it asks for TLS."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> Endpoint:
    """Host, port and TLS of ``stomp://host[:port]`` or ``stomp+ssl://host[:port]``."""
    where = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PermanentError(f"stomp: invalid URL {where}: {exc}") from None
    if parts.scheme not in ("stomp", "stomp+ssl"):
        raise PermanentError(f"stomp: invalid URL {where}: expected stomp:// or stomp+ssl://")
    if parts.username or parts.password:
        raise PermanentError(
            f"stomp: invalid URL {where}: put the user in 'login' and the password in "
            "'passcode', not in the URL"
        )
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise PermanentError(f"stomp: invalid URL {where}: expected stomp://host:port")
    tls = parts.scheme == "stomp+ssl"
    return Endpoint(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls)


def heartbeat_ms(config: StompConnection) -> int:
    """The configured heart-beat interval in milliseconds (0: off)."""
    return round(config.heartbeat * 1000) if config.heartbeat > 0 else 0


class StompClient:
    """One STOMP 1.2 connection; see the module docstring for its threads and lifecycle."""

    def __init__(self, config: StompConnection, purpose: str, client_id: str | None = None) -> None:
        self.config = config
        self.purpose = purpose
        self.client_id = client_id
        self.where = redact_url(config.url)
        self.server = ""
        """The broker's ``server`` header, e.g. ``ActiveMQ/5.17.2``."""
        self.heartbeats = (0, 0)
        """Negotiated (send, receive) heart-beat intervals in milliseconds."""
        self.on_message: Callable[[Frame], None] = lambda frame: None
        """Called on the receiver thread for each MESSAGE frame; must not raise."""
        self.on_end: Callable[[BridgeError], None] = lambda error: None
        """Called once on the loop when the connection has ended."""
        self.error: BridgeError | None = None
        """Why the connection ended (set by the first thread that saw it end)."""
        self._passcode = config.passcode.get_secret_value() if config.passcode is not None else None
        self._conn: Any = None  # stomp.StompConnection12 (untyped)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] | None = None
        self._closing = False
        self._logged_in = False  # CONNECTED seen (receiver thread)
        self._receipts: dict[str, asyncio.Future[None]] = {}
        self._next_receipt = 0
        self._completions: Completions | None = None  # receipts settled, a burst at a time
        self._outbox: deque[bytes] = deque()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._receiver: threading.Thread | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ any thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that opened this client."""
        assert self._loop is not None, "client not opened"
        return self._loop

    @property
    def alive(self) -> bool:
        """True from CONNECTED until the connection ends."""
        return self.error is None and self._opened is not None and self._opened.done()

    def write(self, frame: bytes) -> bool:
        """Queue `frame` for the writer thread; False when the connection has ended."""
        if self.error is not None:
            return False
        self._outbox.append(frame)
        if not self._wake.is_set():
            self._wake.set()
        return True

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the asyncio loop soon (from another thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(fn, *args)

    def fail(self, error: BridgeError) -> None:
        """End the connection because of `error` (reported through `on_end`)."""
        if self.error is None:
            self.error = error
        self._shutdown_socket()
        self.post(self._end)

    # ------------------------------------------------------------ asyncio side

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A fresh receipt id and the future its RECEIPT (or ERROR) settles."""
        self._next_receipt += 1
        receipt = str(self._next_receipt)
        future: asyncio.Future[None] = self.loop.create_future()
        if self.error is not None:
            future.set_exception(ConnectionLost(f"stomp: not connected ({self.error})"))
        else:
            self._receipts[receipt] = future
        return receipt, future

    def forget(self, receipt: str) -> None:
        """Stop waiting for `receipt` (its frame was never written)."""
        future = self._receipts.pop(receipt, None)
        if future is not None and not future.done():
            future.cancel()

    @property
    def pending_receipts(self) -> int:
        """How many receipts are awaited."""
        return len(self._receipts)

    async def open(self) -> None:
        """Connect and log in; raise a bridge error (see connectors.stomp.errors) on failure."""
        if self.config.tls is not None:  # stomp.py builds its own context: check the files
            tls_context(self.config.tls, "stomp")  # as every connector does, with its errors
        loop = self._loop = asyncio.get_running_loop()
        self._completions = Completions(loop)
        self._opened = loop.create_future()
        self._ended = loop.create_future()
        endpoint = parse_url(self.config.url)
        conn = self._conn = self._connection(endpoint)
        conn.set_listener("natsbridge", _Listener(self))
        headers = {}
        if self.client_id:
            headers["client-id"] = self.client_id
        deadline = loop.time() + DEFAULT_CONNECT_TIMEOUT_S
        try:
            # Blocking (TCP + TLS, each bounded by the socket timeout): on a worker thread.
            with translating(self.where):
                await asyncio.to_thread(self._connect, conn, headers)
            remaining = max(0.1, deadline - loop.time())
            try:
                await asyncio.wait_for(asyncio.shield(self._opened), remaining)
            except TimeoutError:
                raise BridgeTimeout(
                    f"stomp: {self.where}: no CONNECTED frame within {DEFAULT_CONNECT_TIMEOUT_S:g}s"
                ) from None
        except BaseException as exc:
            self.fail(
                translate(exc, self.where)
                if isinstance(exc, Exception)
                else ConnectionLost("stomp: connect cancelled")
            )
            await self._wait_ended()
            raise
        self._writer = spawn(self._write_loop, f"stomp writer {self.purpose}")
        receive_ms = self.heartbeats[1]
        if receive_ms:
            self._watchdog = loop.create_task(self._watch(receive_ms / 1000))
        log.info(
            "stomp %s: connected to %s (%s, heart-beat %d/%d ms)",
            self.purpose,
            self.where,
            self.server or "unknown server",
            *self.heartbeats,
        )

    async def close(self) -> None:
        """DISCONNECT after everything queued (bounded wait), then close. Idempotent."""
        if self._ended is None or self._ended.done():
            return
        self._closing = True
        if self.alive:
            receipt, future = self.expect()
            self.write(b"DISCONNECT\nreceipt:" + receipt.encode() + b"\n\n\x00")
            with contextlib.suppress(TimeoutError, BridgeError):
                await asyncio.wait_for(future, DEFAULT_CLOSE_TIMEOUT_S)
        self.fail(ConnectionLost("stomp: connection closed by the bridge"))
        await self._wait_ended()

    async def _wait_ended(self) -> None:
        ended = self._ended
        if ended is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(ended), DEFAULT_CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._end()  # the receiver thread is stuck: report the end ourselves

    async def _watch(self, interval: float) -> None:
        """Backstop for stomp.py's heart-beat thread (see the module docstring)."""
        conn = self._conn
        limit = WATCHDOG_FACTOR * interval
        while self.error is None:
            await asyncio.sleep(interval / 2)
            last = getattr(conn, "received_heartbeat", None)
            if last is None:
                continue
            silent = time.monotonic() - last
            if silent > limit:
                log.warning(
                    "stomp %s: nothing from %s for %.1fs; closing the connection",
                    self.purpose,
                    self.where,
                    silent,
                )
                self.fail(
                    ConnectionLost(f"stomp: {self.where}: no heart-beat or frame for {silent:.1f}s")
                )
                return

    def _end(self) -> None:
        """On the loop: the connection is over; fail what is pending and tell the owner once."""
        ended = self._ended
        if ended is None or ended.done():
            return
        error = self.error or ConnectionLost("stomp: connection ended")
        self.error = error
        if self._completions is not None:
            self._completions.flush()  # settled by frames that arrived before the end
        opened = self._opened
        if opened is not None and not opened.done():
            opened.set_exception(error)
            opened.exception()  # retrieved here: open() may have stopped waiting
        lost = error
        if not isinstance(error, ConnectionLost):
            lost = ConnectionLost(f"stomp: connection ended after an ERROR frame: {error}")
        receipts = list(self._receipts.values())
        self._receipts.clear()
        for future in receipts:
            settle(future, lost)
        self._wake.set()  # the writer sees `error` and stops
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            self.on_end(error)
        finally:
            ended.set_result(None)

    # ------------------------------------------------------------ stomp.py's threads

    def _connection(self, endpoint: Endpoint) -> Any:
        beat = heartbeat_ms(self.config)
        vhost = self.config.vhost
        if vhost is None and self.config.dialect == "rabbitmq":
            vhost = "/"  # RabbitMQ reads the host header as the virtual host
        conn = stomp.Connection12(
            [(endpoint.host, endpoint.port)],
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_attempts_max=1,  # the runtime reconnects, with back-off
            reconnect_sleep_initial=0.0,
            timeout=DEFAULT_CONNECT_TIMEOUT_S,
            heartbeats=(beat, beat),
            vhost=vhost,
            auto_decode=False,
            heart_beat_receive_scale=HEARTBEAT_GRACE,
        )
        tls = self.config.tls
        if endpoint.tls or tls is not None:
            conn.set_ssl(
                for_hosts=[(endpoint.host, endpoint.port)],
                key_file=tls.key_file if tls else None,
                cert_file=tls.cert_file if tls else None,
                ca_certs=tls.ca_file if tls else None,
                verify=tls.verify if tls else True,
            )
        conn.transport.override_threading(self._start_receiver)
        direct = {"MESSAGE": lambda frame: self.on_message(frame), "RECEIPT": self._on_receipt}
        read_with_our_parser(conn, direct, self.purpose)
        return conn

    def _connect(self, conn: Any, headers: dict[str, str]) -> None:
        """On a worker thread: TCP, TLS, then the CONNECT frame (CONNECTED comes later)."""
        conn.connect(
            username=self.config.login,
            passcode=self._passcode,
            wait=False,
            headers=headers,
            with_connect_command=True,
        )
        if self.error is not None:  # open() gave up meanwhile (cancelled or timed out)
            self._shutdown_socket()

    def _start_receiver(self, run: Callable[[], None]) -> threading.Thread:
        """stomp.py's hook for starting its receiver thread, called once the socket is up."""
        transport = self._conn.transport
        if transport.blocking and transport.socket is not None:
            # The connect timeout must not become a read timeout: an idle connection
            # without heart-beats would otherwise be dropped after it.
            transport.socket.settimeout(None)
        self._receiver = spawn(run, f"stomp reader {self.purpose}")
        return self._receiver

    def _shutdown_socket(self) -> None:
        """Wake the receiver thread so that it ends (from any thread, never blocking)."""
        conn = self._conn
        if conn is None:
            return
        transport = conn.transport
        transport.running = False
        sock = transport.socket
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)

    def _write_loop(self) -> None:
        outbox = self._outbox
        wake = self._wake
        transport = self._conn.transport
        while True:
            wake.wait()
            wake.clear()
            if self.error is not None:
                return
            while outbox:
                chunks = []
                size = 0
                while outbox and size < MAX_WRITE_BYTES:
                    chunk = outbox.popleft()
                    chunks.append(chunk)
                    size += len(chunk)
                try:
                    if transport.blocking:
                        transport.send(b"".join(chunks))
                    else:  # TLS: stomp.py's receiver thread owns the non-blocking socket
                        transport.send_queue.put(b"".join(chunks))
                except Exception as exc:
                    self.fail(translate(exc, self.where))
                    return

    def _settle(self, future: asyncio.Future[None], error: BridgeError | None) -> None:
        """On the receiver thread: queue a receipt's outcome; one loop wake-up per burst."""
        assert self._completions is not None
        self._completions.settle(future, error)

    def _on_connected(self, frame: Frame) -> None:
        headers = frame.headers
        version = headers.get("version", "1.0")
        self.server = headers.get("server", "")
        self._logged_in = True
        if version != "1.2":
            self.fail(
                PermanentError(
                    f"stomp: {self.where} speaks STOMP {version}; natsbridge needs STOMP 1.2"
                )
            )
            return
        beat = heartbeat_ms(self.config)
        sx, _, sy = headers.get("heart-beat", "0,0").replace(" ", "").partition(",")
        try:
            server = (int(sx or 0), int(sy or 0))
        except ValueError:
            server = (0, 0)
        self.heartbeats = (
            max(beat, server[1]) if beat and server[1] else 0,
            max(beat, server[0]) if beat and server[0] else 0,
        )
        opened = self._opened
        if opened is not None:
            self.post(settle, opened)

    def _on_receipt(self, frame: Frame) -> None:
        future = self._receipts.pop(frame.headers.get("receipt-id", ""), None)
        if future is not None:
            self._settle(future, None)

    def _on_error(self, frame: Frame) -> None:
        error = from_error_frame(frame.headers, frame.body, self.where, self._passcode)
        if not self._logged_in:
            # Refused at CONNECT (bad login, vhost, client-id in use): the broker closes.
            self.fail(error)
            return
        receipt = frame.headers.get("receipt-id")
        future = self._receipts.pop(receipt, None) if receipt else None
        if future is None and receipt is None and len(self._receipts) == 1:
            # RabbitMQ names no receipt in its ERROR frames; with one frame awaiting a
            # receipt, the error can only be about that one. RabbitMQ closes the
            # connection after it: a retryable error is a lost connection, so that the
            # runtime reconnects and counts it (poison detection) instead of resending
            # on a dead connection.
            [(receipt, future)] = list(self._receipts.items())
            self._receipts.pop(receipt, None)
            if isinstance(error, RetryableError) and not isinstance(error, ConnectionLost):
                error = ConnectionLost(f"{error} (the broker closed the connection)")
        if future is not None:
            log.debug("stomp %s: broker refused a frame: %s", self.purpose, error)
            self._settle(future, error)
            return
        self.fail(error)

    def _on_disconnected(self) -> None:
        if self.error is None:
            conn = self._conn
            receive = getattr(conn, "receive_sleep", 0) if self.heartbeats[1] else 0
            last = getattr(conn, "received_heartbeat", None)
            if self._closing:
                self.error = ConnectionLost("stomp: connection closed by the bridge")
            elif receive and last is not None and time.monotonic() - last > receive:
                self.error = ConnectionLost(
                    f"stomp: {self.where}: heart-beat lost (nothing received for "
                    f"{time.monotonic() - last:.1f}s)"
                )
            else:
                self.error = ConnectionLost(f"stomp: {self.where}: connection lost")
        log.debug("stomp %s: disconnected: %s", self.purpose, self.error)
        self.post(self._end)


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """stomp.py's callbacks, forwarded to the client; an exception here would kill the socket.

    MESSAGE and RECEIPT frames do not come this way (see `driver.read_with_our_parser`).
    """

    def __init__(self, client: StompClient) -> None:
        self.client = client

    def on_connected(self, frame: Frame) -> None:
        self._guard(self.client._on_connected, frame)

    def on_error(self, frame: Frame) -> None:
        self._guard(self.client._on_error, frame)

    def on_disconnected(self) -> None:
        self._guard(self.client._on_disconnected)

    def on_heartbeat_timeout(self) -> None:
        pass  # on_disconnected came first and named the lost heart-beat

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("stomp %s: internal error in a frame callback", self.client.purpose)
