"""The MQTT sink: PUBLISH to the rendered topic, QoS 1 confirmed by the broker's PUBACK.

`send_batch()` checks each rendered topic (connectors.mqtt.topics.validate_topic), builds
the MQTT 5 properties from the headers (connectors.mqtt.message) and queues the PUBLISH
through paho; then it awaits the PUBACKs. Many publishes are in flight at once, up to the
route's ``max_in_flight`` and the broker's Receive Maximum (paho queues the rest, in
order). A PUBACK with a failure reason code (MQTT 5: not authorized, topic name invalid,
quota exceeded ...) fails that message with a PermanentError (dead-lettered) or, for the
codes that may pass, a RetryableError; a lost connection fails every unconfirmed message
with ConnectionLost and the runtime sends them again (at least once: a message whose
PUBACK was lost arrives twice). QoS 0 is "confirmed" once written to the socket.

The sink's session is not persistent (client id ``<client_id>:<route>:out``, clean
start): what it had in flight is the runtime's to send again, not the broker's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial

from natsbridge.connectors.mqtt.client import CLOSE_TIMEOUT_S, MqttClient
from natsbridge.connectors.mqtt.config import MqttConnection, MqttSink
from natsbridge.connectors.mqtt.message import publish_properties
from natsbridge.connectors.mqtt.topics import validate_topic
from natsbridge.sdk import BridgeError, Confirms, ConnectionLost, Envelope, Route, remembered

log = logging.getLogger("natsbridge.mqtt")

MAX_VALID_TOPICS = 10_000
"""Rendered topics remembered as valid (the set starts over beyond this)."""


class MqttTopicSink:
    """Sink publishing to MQTT topics; see the module docstring."""

    def __init__(self, route: Route, connection: MqttConnection, client_id: str) -> None:
        spec = route.sink
        assert isinstance(spec, MqttSink)
        self._config = connection
        self._route_name = route.name
        self.qos = spec.qos
        self.retain = spec.retain
        self.client_id = client_id
        self.window = route.spec.max_in_flight  # lowered to the broker's Receive Maximum
        self._client: MqttClient | None = None
        self._confirms = Confirms()
        self._check_topic = remembered(validate_topic, MAX_VALID_TOPICS)

    @property
    def what(self) -> str:
        """How logs and errors name this sink."""
        return f"mqtt sink {self._route_name}"

    async def connect(self) -> None:
        """Connect with a clean session, in flight at most what the broker takes."""
        await self.close()
        client = await self._open()
        if client.server_receive_max < self.window:
            # A broker whose Receive Maximum is exceeded drops the connection, and paho can
            # only be told the limit before connecting: connect again, once, with it.
            log.info(
                "%s: the broker takes %d messages in flight, not %d",
                self.what,
                client.server_receive_max,
                self.window,
            )
            self.window = client.server_receive_max
            await client.close()
            client = await self._open()
        self._client = client

    async def _open(self) -> MqttClient:
        client = MqttClient(
            self._config, self.client_id, False, self.window, f"{self._route_name} sink"
        )
        client.on_end = partial(self._on_end, client)
        await client.open()
        return client

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """PUBLISH each envelope to its subject (a topic); settled by its PUBACK."""
        return await self._confirms.send_each(envelopes, self._publish)

    def _publish(self, envelope: Envelope) -> asyncio.Future[None]:
        client = self._client
        if client is None:
            raise ConnectionLost(f"{self.what}: not connected")
        topic = envelope.subject
        self._check_topic(topic)  # MappingError: dead-lettered
        properties = publish_properties(envelope) if client.v5 else None
        return client.publish(topic, envelope.payload, self.qos, self.retain, properties)

    async def close(self) -> None:
        """Wait (bounded) for outstanding PUBACKs, then DISCONNECT. Idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        await self._confirms.drain(CLOSE_TIMEOUT_S, self.what)
        await client.close()

    def _on_end(self, client: MqttClient, error: BridgeError) -> None:
        if self._client is client:
            log.warning("%s: %s", self.what, error)
            self._client = None
