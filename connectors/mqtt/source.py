"""The MQTT source: a persistent session subscribed to the route's filters, PUBACK after commit.

Each received PUBLISH becomes an `Incoming` on paho's network thread and reaches
`receive()` through the connection's Inbox (one loop wake-up per burst). A QoS 1
message is PUBACKed only when the runtime settles it (``manual_ack``), that is once the
buffer holds it durably, and PUBACKs go out in the order the messages arrived (MQTT
4.6): a settled message waits for the ones before it. Backpressure: MQTT 5 tells the
broker our Receive Maximum (the route's ``max_in_flight``), so it sends no more unacked
messages than that; an MQTT 3.1.1 broker applies its own limit (Mosquitto's
``max_inflight_messages``).

Settling:
    ack(None)            PUBACK
    ack(PermanentError)  PUBACK: the runtime has put it in the route's dead-letter stream
    ack(other error)     MQTT has no NACK: the source reconnects on the next `receive()`
                         and the broker sends every message still unacked again (the
                         session is persistent), this one included
A QoS 0 message needs no settling (at most once: the config refuses QoS 0 under
``at_least_once``).

Replicas (``bridge.replica`` set, as `run --workers` does): the client id ends in
``:<replica>`` and each filter is subscribed as ``$share/natsbridge-<bridge id>-<route>/
<filter>``, so the broker hands each message to one replica. A replica's unacked messages
stay in its own session until that replica (the same name) comes back.

The session: client id ``<client_id>:<route>:in``, ``clean_start``/``clean_session``
false, MQTT 5 session expiry ``session_expiry``; while the bridge is away the broker
keeps the subscriptions and queues QoS 1 messages for it, and sends them, together with
the ones delivered but not PUBACKed, when it comes back. A subscription the session kept
from an earlier config (a filter removed from ``from.topics``) still delivers: such a
message matches none of the route's filters and is dead-lettered with that reason,
never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from functools import partial

from paho.mqtt.client import MQTTMessage

from natsbridge.connectors.mqtt.client import MqttClient
from natsbridge.connectors.mqtt.config import MqttConnection, MqttSource
from natsbridge.connectors.mqtt.message import EnvelopeReader
from natsbridge.connectors.mqtt.topics import match
from natsbridge.sdk import (
    AckOnce,
    BridgeError,
    Inbox,
    Incoming,
    MappingError,
    PermanentError,
    Route,
    receive,
    unreadable,
)

log = logging.getLogger("natsbridge.mqtt")


class AckOrder:
    """The PUBACKs of one connection, sent in the order their messages arrived (MQTT 4.6)."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._lock = threading.Lock()  # arrivals on paho's thread, settles on the loop
        self._waiting: deque[int] = deque()  # packet ids, in arrival order
        self._settled: set[int] = set()

    def arrived(self, mid: int) -> None:
        """Paho's thread: QoS 1 message `mid` arrived; its PUBACK waits for `settled`."""
        with self._lock:
            self._waiting.append(mid)

    def settled(self, mid: int) -> None:
        """Any thread: `mid` may be PUBACKed; sends every PUBACK no earlier message holds up."""
        with self._lock:
            self._settled.add(mid)
            waiting = self._waiting
            while waiting and waiting[0] in self._settled:
                first = waiting.popleft()
                self._settled.discard(first)
                self._client.ack(first)


class MqttTopicSource:
    """Source subscribed to `from.topics`; see the module docstring."""

    def __init__(
        self, route: Route, connection: MqttConnection, client_id: str, share: str | None = None
    ) -> None:
        spec = route.source
        assert isinstance(spec, MqttSource)
        self._config = connection
        self._route_name = route.name
        self.filters = list(spec.topics)
        # Replicas subscribe as one shared-subscription group: each message goes to one.
        self.subscriptions = (
            [f"$share/{share}/{f}" for f in self.filters] if share else self.filters
        )
        self.qos = spec.qos
        self.client_id = client_id
        self.receive_max = route.spec.max_in_flight
        self._reader = EnvelopeReader(spec.connection)
        self._client: MqttClient | None = None
        self._inbox: Inbox[Incoming] | None = None
        self._redeliver = False  # a retryable nack asks for a reconnect (module doc)

    @property
    def what(self) -> str:
        """How logs and errors name this source."""
        return f"mqtt source {self._route_name}"

    async def connect(self) -> None:
        """Connect (resuming the session) and subscribe; returns once SUBACKed."""
        await self.close()
        self._redeliver = False
        client = MqttClient(
            self._config, self.client_id, True, self.receive_max, f"{self._route_name} source"
        )
        inbox: Inbox[Incoming] = Inbox()
        order = AckOrder(client)
        client.on_message = partial(self._on_message, inbox, order)
        client.on_end = partial(self._on_end, client, inbox)
        self._client, self._inbox = client, inbox
        try:
            await client.open()
            granted = await client.subscribe(self.subscriptions, self.qos)
        except BaseException:
            self._client = self._inbox = None
            await client.close()
            raise
        if min(granted) < self.qos:
            log.warning(
                "%s: the broker granted QoS %d, not %d: at most once",
                self.what,
                min(granted),
                self.qos,
            )
        log.info(
            "%s: subscribed to %s at QoS %d as %r (%s session)",
            self.what,
            ", ".join(self.subscriptions),
            self.qos,
            self.client_id,
            "resumed" if client.session_present else "new",
        )

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` messages, waiting at most `timeout` s for the first."""
        if self._redeliver:
            log.info("%s: reconnecting so that the broker sends unacked messages again", self.what)
            await self.connect()
        return await receive(self._inbox, max_messages, timeout, self.what)

    async def close(self) -> None:
        """DISCONNECT after the PUBACKs already due; unacked messages stay in the session."""
        client, self._client = self._client, None
        if client is not None:
            if client.error is None:
                await client.round_trip()
            await client.close()

    # ------------------------------------------------------------ paho's network thread

    def _on_message(self, inbox: Inbox[Incoming], order: AckOrder, message: MQTTMessage) -> None:
        if message.qos > 0:
            order.arrived(message.mid)
            ack = AckOnce(partial(self._settle, order, message.mid))
        else:
            ack = AckOnce(_at_most_once)
        try:
            envelope = self._reader.envelope(message)
            if not any(match(f, envelope.subject) is not None for f in self.filters):
                raise MappingError(
                    f"mqtt: topic {envelope.subject!r} matches none of {self.filters}: a "
                    "subscription the persistent session kept from an earlier config"
                )
            incoming = Incoming(envelope, ack)
        except Exception as exc:  # dead-lettered by the runtime, then acked: never lost
            incoming = unreadable(self._reader.undecodable(message), ack, exc, "mqtt")
        inbox.post(incoming)

    # ------------------------------------------------------------ any thread

    def _settle(self, order: AckOrder, mid: int, error: BaseException | None) -> None:
        if error is None or isinstance(error, PermanentError):
            order.settled(mid)
        else:
            self._redeliver = True

    # ------------------------------------------------------------ asyncio side

    def _on_end(self, client: MqttClient, inbox: Inbox[Incoming], error: BridgeError) -> None:
        inbox.end(error, discard=True)  # unacked: the session sends them again
        if self._client is client:
            log.warning("%s: %s", self.what, error)
            self._client = None


def _at_most_once(error: BaseException | None) -> None:
    """The settling of a QoS 0 message: nothing to tell the broker."""
