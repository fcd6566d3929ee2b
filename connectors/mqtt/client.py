"""One MQTT connection: a paho-mqtt 2 client, its network thread, and the loop side of it.

Threading: `open()` connects (TCP, TLS, CONNECT) on a worker thread, then paho's own
network thread (``loop_start``) reads and writes the socket. Publishes and PUBACKs are
queued from the event loop through paho's public, thread-safe ``publish()`` and ``ack()``;
received messages (`on_message`) and publish outcomes cross back to the loop in bursts
through the seam toolkit (Completions here, the source's Inbox).

Lifecycle: paho's automatic reconnect is off (``reconnect_on_failure=False``). When the
connection ends for any reason the network thread stops, every publish still waiting
fails with ConnectionLost and `on_end(error)` runs once on the loop; the runtime then
calls the source's or sink's `connect()` again, which makes a new client. So a PUBACK can
never be sent for a message of an earlier connection on a later one.

Errors (`connect_error`, `refusal`): a CONNACK refusing the login, the client id, the
protocol version or the client itself is a PermanentError (retrying cannot help); an
unreachable or busy broker is a ConnectionLost; a TLS certificate that does not verify
is permanent. Messages name the URL without its password, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from natsbridge.bridge import logs
from natsbridge.bridge.secrets import redact_url
from natsbridge.connectors.mqtt.config import MqttConnection
from natsbridge.sdk import (
    BridgeError,
    BridgeTimeout,
    Completions,
    ConnectionLost,
    MappingError,
    MessageRejected,
    PermanentError,
    RetryableError,
    tls_context,
)

log = logging.getLogger("natsbridge.mqtt")
paho_log = logging.getLogger("paho.mqtt.client")  # paho's own lines, with --driver-logs

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
CLOSE_TIMEOUT_S = 5.0
"""How long `close()` waits for the network thread to end."""
FLUSH_FILTER = "$natsbridge/round-trip"
"""A filter nobody subscribes to: unsubscribing from it is a round trip (`round_trip`)."""
MAX_RECEIVE = 65535
"""MQTT 5's largest Receive Maximum (unacked QoS 1 messages in flight, each way)."""

PERMANENT_CONNACK = frozenset({0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x95, 0x9C, 0x9D})
"""CONNACK reason codes retrying cannot fix: malformed/protocol error, unsupported
version, client id not valid, bad user name or password, not authorized, banned, bad
authentication method, packet too large, use another server, server moved. (paho gives
MQTT 3.1.1 return codes as the same reason codes.) Any other refusal may pass."""
RETRYABLE_PUBACK = frozenset({0x89, 0x91, 0x97})
"""PUBACK reason codes that may pass later: server busy, packet id in use, quota exceeded.
Any other code of 0x80 or more refuses the message for good (not authorized, topic name
invalid, payload format invalid ...)."""


class MqttRefused(PermanentError):
    """The broker refused the connection, a subscription or a message for good."""


def endpoint(url: str) -> tuple[str, int, bool]:
    """Host, port and TLS of ``mqtt://host[:port]`` or ``mqtts://host[:port]``."""
    where = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PermanentError(f"mqtt: invalid URL {where}: {exc}") from None
    if parts.username or parts.password:
        raise PermanentError(
            f"mqtt: invalid URL {where}: put the user in 'username' and the password in "
            "'password', not in the URL"
        )
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise PermanentError(f"mqtt: invalid URL {where}: expected mqtt://host:port")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls


def connect_error(where: str, exc: BaseException) -> BridgeError:
    """The bridge error for an exception of paho's blocking connect()."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"mqtt: {where}: TLS certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ConnectionLost(f"mqtt: {where}: TLS handshake failed: {exc}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return BridgeTimeout(f"mqtt: {where}: connect timed out")
    if isinstance(exc, OSError):
        return ConnectionLost(f"mqtt: {where}: cannot connect: {exc.strerror or exc}")
    if isinstance(exc, ValueError):
        return PermanentError(f"mqtt: {where}: {exc}")
    return ConnectionLost(f"mqtt: {where}: cannot connect: {type(exc).__name__}: {exc}")


def refusal(where: str, what: str, code: ReasonCode) -> BridgeError:
    """The error for a failure reason code of a CONNACK ("connection refused")."""
    error = MqttRefused if code.value in PERMANENT_CONNACK else ConnectionLost
    return error(f"mqtt: {where}: {what}: {code.getName()} (0x{code.value:02X})")


def puback_error(topic: str, code: ReasonCode) -> BridgeError:
    """The error for a PUBACK whose reason code refuses the message."""
    text = f"mqtt: the broker refused a message to {topic!r}: {code.getName()} (0x{code.value:02X})"
    if code.value in RETRYABLE_PUBACK:
        return RetryableError(text)
    return MessageRejected(text)


def in_route(route: str | None, callback: Callable[..., None]) -> Callable[..., None]:
    """`callback`, setting the route's log context in the thread that calls it first."""

    def call(*args: Any) -> None:
        logs.route_context(route)
        callback(*args)

    return call


def _paho_line(client: paho.Client, userdata: Any, level: int, line: str) -> None:
    paho_log.log(paho.LOGGING_LEVEL[level], line)


class MqttClient:
    """One MQTT connection; see the module docstring for its threads and lifecycle."""

    def __init__(
        self,
        config: MqttConnection,
        client_id: str,
        persistent: bool,
        receive_max: int,
        purpose: str,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.persistent = persistent
        self.purpose = purpose
        self.where = redact_url(config.url)
        self.v5 = config.protocol == "5"
        self.receive_max = max(1, min(receive_max, MAX_RECEIVE))
        self.session_present = False
        """The broker still had this client id's session (a persistent source resumed)."""
        self.server_receive_max = MAX_RECEIVE
        """MQTT 5: the QoS 1 publishes the broker takes in flight (CONNACK Receive Maximum);
        paho neither applies it nor lets it be changed once connected (see the sink)."""
        self.on_message: Callable[[paho.MQTTMessage], None] = lambda message: None
        """Called on paho's network thread for each received PUBLISH; must not raise."""
        self.on_end: Callable[[BridgeError], None] = lambda error: None
        """Called once on the loop when the connection has ended."""
        self.error: BridgeError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[None] | None = None
        self._completions: Completions | None = None
        self._lock = threading.Lock()  # guards _pending and _early (loop and network thread)
        self._pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat their publish() return
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._paho = self._build()

    def _build(self) -> paho.Client:
        config = self.config
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else not self.persistent,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        if endpoint(config.url)[2] or config.tls is not None:
            client.tls_set_context(tls_context(config.tls, "mqtt"))
            client.tls_insecure_set(config.tls is not None and not config.tls.verify)
        client.connect_timeout = config.connect_timeout
        client.max_inflight_messages_set(self.receive_max)
        # paho's network thread starts with an empty context: each callback names the route
        # before it runs, so that its lines and paho's own carry `route`.
        route = logs.current_route()
        if paho_log.isEnabledFor(logging.DEBUG):  # --log-level debug --driver-logs
            client.on_log = in_route(route, _paho_line)  # before the CONNACK's callback
        client.on_connect = in_route(route, self._on_connect)
        client.on_disconnect = in_route(route, self._on_disconnect)
        client.on_message = in_route(route, self._on_message)
        client.on_publish = in_route(route, self._on_publish)
        client.on_subscribe = in_route(route, self._on_subscribe)
        client.on_unsubscribe = client.on_subscribe
        return client

    # ------------------------------------------------------------ asyncio side

    async def open(self) -> None:
        """Connect, and return once the broker accepted the CONNECT (raises why not)."""
        loop = self._loop = asyncio.get_running_loop()
        self._completions = Completions(loop)
        self._connack = loop.create_future()
        host, port, _ = endpoint(self.config.url)
        properties = None
        clean_start: bool | int = paho.MQTT_CLEAN_START_FIRST_ONLY
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.ReceiveMaximum = self.receive_max
            if self.persistent:
                properties.SessionExpiryInterval = round(self.config.session_expiry)
            clean_start = not self.persistent
        keepalive = round(self.config.keepalive)
        try:
            await asyncio.to_thread(
                self._paho.connect,
                host,
                port,
                keepalive,
                clean_start=clean_start,
                properties=properties,
            )
        except Exception as exc:
            raise connect_error(self.where, exc) from None
        self._paho.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), self.config.connect_timeout)
        except TimeoutError:
            await self.close()
            raise BridgeTimeout(
                f"mqtt: {self.where}: no CONNACK within {self.config.connect_timeout:g}s"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def subscribe(self, filters: list[str], qos: int) -> list[int]:
        """Subscribe to `filters`; the QoS granted to each (MqttRefused if one was refused)."""
        future: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        with self._lock:
            rc, mid = self._paho.subscribe([(f, qos) for f in filters])
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionLost(
                    f"mqtt: {self.where}: subscribe failed: {paho.error_string(rc)}"
                )
            self._acks[mid] = future
        try:
            codes = await asyncio.wait_for(future, self.config.connect_timeout)
        except TimeoutError:
            raise BridgeTimeout(
                f"mqtt: {self.where}: no SUBACK within {self.config.connect_timeout:g}s"
            ) from None
        for topic_filter, code in zip(filters, codes, strict=True):
            if code.is_failure:
                raise MqttRefused(
                    f"mqtt: {self.where}: subscription to {topic_filter!r} refused: "
                    f"{code.getName()} (0x{code.value:02X})"
                )
        return [code.value for code in codes]

    async def round_trip(self) -> None:
        """Return once the broker answered an UNSUBSCRIBE queued after everything sent so far.

        The broker handles a connection's packets in order, so the PUBACKs queued before
        it have been processed: a DISCONNECT right after cannot race them (a reconnect
        taking over the session could otherwise beat a PUBACK still in the socket).
        """
        future: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        with self._lock:
            rc, mid = self._paho.unsubscribe(FLUSH_FILTER)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self._acks[mid] = future
        with contextlib.suppress(TimeoutError, BridgeError):
            await asyncio.wait_for(future, CLOSE_TIMEOUT_S)

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None
    ) -> asyncio.Future[None]:
        """Queue a PUBLISH; the future resolves at its PUBACK (QoS 1) or once written (QoS 0)."""
        future: asyncio.Future[None] = self.loop.create_future()
        if self.error is not None:
            future.set_exception(
                ConnectionLost(f"mqtt: {self.where}: not connected ({self.error})")
            )
            return future
        try:
            info = self._paho.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # paho's own checks: wildcards, sizes
            raise MappingError(f"mqtt: cannot publish to {topic!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            future.set_exception(
                ConnectionLost(f"mqtt: {self.where}: publish failed: {paho.error_string(info.rc)}")
            )
            return future
        with self._lock:
            code = self._early.pop(info.mid, None)
            if code is None:
                self._pending[info.mid] = (future, topic)
        if code is not None:
            self._settle(future, topic, code)
        return future

    def ack(self, mid: int) -> None:
        """Any thread: send the PUBACK of received QoS 1 message `mid`."""
        if self.error is None:
            self._paho.ack(mid, 1)

    async def close(self) -> None:
        """DISCONNECT after everything queued (acks given reach the broker); idempotent."""
        if self.error is None:
            self.error = ConnectionLost(f"mqtt: {self.where}: {self.purpose} closed")
        self._paho.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._paho.loop_stop), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("mqtt %s: the network thread did not stop", self.purpose)
        self._end(self.error)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that opened this client."""
        assert self._loop is not None, "client not opened"
        return self._loop

    def _settle(self, future: asyncio.Future[None], topic: str, code: ReasonCode) -> None:
        assert self._completions is not None
        self._completions.settle(future, puback_error(topic, code) if code.is_failure else None)

    def _end(self, error: BridgeError) -> None:
        """On the loop, once: fail what still waits and tell the owner."""
        if self._completions is None:
            return
        self._completions.flush()
        with self._lock:
            pending, self._pending = self._pending, {}
            acks, self._acks = self._acks, {}
        lost = ConnectionLost(f"mqtt: {self.where}: connection ended ({error})")
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(lost)
        for waiter in acks.values():
            if not waiter.done():
                waiter.set_exception(lost)
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(error)
        self._completions = None
        self.on_end(error)

    # ------------------------------------------------------------ paho's network thread

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
    ) -> None:
        if code.is_failure:
            self._post(self._connected, refusal(self.where, "connection refused", code))
            return
        self.session_present = bool(flags.session_present)
        if self.v5:
            self.server_receive_max = getattr(props, "ReceiveMaximum", MAX_RECEIVE)
        self._post(self._connected, None)

    def _connected(self, error: BridgeError | None) -> None:
        connack = self._connack
        if connack is not None and not connack.done():
            if error is None:
                connack.set_result(None)
            else:
                self.error = error
                connack.set_exception(error)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
    ) -> None:
        if self.error is None:
            reason = f"{code.getName()} (0x{code.value:02X})" if code.value else "connection lost"
            if code.value == 0x8E:
                reason += f": another client connected with client id {self.client_id!r}"
            self.error = ConnectionLost(f"mqtt: {self.where}: disconnected: {reason}")
        self._post(self._end, self.error)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self.on_message(message)
        except Exception:  # never into paho's loop: it would end the connection
            log.exception("mqtt %s: handling a message failed", self.purpose)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, code: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            entry = self._pending.pop(mid, None)
            if entry is None:
                self._early[mid] = code
                return
        self._settle(entry[0], entry[1], code)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        with self._lock:
            future = self._acks.pop(mid, None)
        if future is not None:
            self._post(_resolve, future, codes)


def _resolve(future: asyncio.Future[list[ReasonCode]], codes: list[ReasonCode]) -> None:
    if not future.done():
        future.set_result(codes)
