"""MQTT messages to Envelopes and back: the only place that knows a PUBLISH's properties.

Received (`EnvelopeReader`): the subject is the topic; the payload the exact bytes;
headers, for MQTT 5, one per user property (repeated names keep their values in order,
names NATS cannot carry escaped by mappings.headers.foreign_header_name, values by
`encode_value`) plus the properties below; ``Mqtt-Topic`` always, and ``Mqtt-Retain:
true`` for a retained message the broker replayed on subscribe.

    MQTT 5 property               NATS header
    ────────────────────────────  ──────────────────────────────────────────
    content type                  ``Mqtt-Content-Type``
    response topic                ``Mqtt-Response-Topic``
    correlation data (bytes)      ``Mqtt-Correlation-Data`` (``base64:`` unless text)
    payload format indicator      ``Mqtt-Payload-Format`` (``0`` bytes, ``1`` UTF-8)
    message expiry interval       ``Mqtt-Message-Expiry`` (seconds)

Sent (`publish_properties`, MQTT 5 only): the same table backwards, every other header
a user property with its original name and value (``Mqtt-Topic`` and ``Mqtt-Retain``
are the source's and are not sent: the sink's own ``to.topic`` and ``to.retain`` rule).
A name or value an MQTT string cannot carry (control characters ...) fails the message
with a MappingError: it is dead-lettered rather than sent to a broker that would drop the
connection over it. MQTT 3.1.1 has no properties: a 3.1.1 sink sends the payload only.
"""

from __future__ import annotations

from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from natsbridge.connectors.mqtt.kind import MQTT_TOPIC, MqttOrigin
from natsbridge.connectors.mqtt.topics import check_text, validate_topic
from natsbridge.mappings.headers import (
    decode_text_value,
    decode_value,
    encode_value,
    foreign_header_name,
    unescape_header_name,
)
from natsbridge.sdk import Envelope, Headers

MQTT_RETAIN = "Mqtt-Retain"
MQTT_CONTENT_TYPE = "Mqtt-Content-Type"
MQTT_RESPONSE_TOPIC = "Mqtt-Response-Topic"
MQTT_CORRELATION_DATA = "Mqtt-Correlation-Data"
MQTT_PAYLOAD_FORMAT = "Mqtt-Payload-Format"
MQTT_MESSAGE_EXPIRY = "Mqtt-Message-Expiry"

_OWN = frozenset(
    name.lower()
    for name in (
        MQTT_TOPIC,
        MQTT_RETAIN,
        MQTT_CONTENT_TYPE,
        MQTT_RESPONSE_TOPIC,
        MQTT_CORRELATION_DATA,
        MQTT_PAYLOAD_FORMAT,
        MQTT_MESSAGE_EXPIRY,
    )
)
"""Lower-cased header names the connector writes; a user property named so is escaped."""
MAX_EXPIRY = 2**32 - 1
"""The largest message expiry interval MQTT 5 can carry (seconds)."""


class EnvelopeReader:
    """Builds Envelopes from the messages one source connection receives."""

    def __init__(self, connection: str) -> None:
        self.connection = connection

    def envelope(self, message: MQTTMessage) -> Envelope:
        """The Envelope of a received PUBLISH (see the module docstring)."""
        topic = message.topic
        headers: Headers = {MQTT_TOPIC: [encode_value(topic)]}
        if message.retain:
            headers[MQTT_RETAIN] = ["true"]
        properties = getattr(message, "properties", None)
        if properties is not None:
            _read_properties(properties, headers)
        return Envelope(
            subject=topic,
            payload=bytes(message.payload),
            headers=headers,
            origin=MqttOrigin(self.connection, "mqtt", topic),
        )

    def undecodable(self, message: MQTTMessage) -> Envelope:
        """What can be read of a message whose topic or properties cannot be converted."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # paho decodes on access; Mosquitto refuses such topics
            topic = ""
        return Envelope(
            subject=topic,
            payload=bytes(message.payload),
            origin=MqttOrigin(self.connection, "mqtt", topic),
        )


def _read_properties(properties: Properties, headers: Headers) -> None:
    for name, value in getattr(properties, "UserProperty", ()):
        headers.setdefault(foreign_header_name(name, _OWN), []).append(encode_value(value))
    content_type = getattr(properties, "ContentType", None)
    if content_type is not None:
        headers[MQTT_CONTENT_TYPE] = [encode_value(content_type)]
    response_topic = getattr(properties, "ResponseTopic", None)
    if response_topic is not None:
        headers[MQTT_RESPONSE_TOPIC] = [encode_value(response_topic)]
    correlation = getattr(properties, "CorrelationData", None)
    if correlation is not None:
        headers[MQTT_CORRELATION_DATA] = [encode_value(bytes(correlation))]
    payload_format = getattr(properties, "PayloadFormatIndicator", None)
    if payload_format is not None:
        headers[MQTT_PAYLOAD_FORMAT] = [str(payload_format)]
    expiry = getattr(properties, "MessageExpiryInterval", None)
    if expiry is not None:
        headers[MQTT_MESSAGE_EXPIRY] = [str(expiry)]


def publish_properties(envelope: Envelope) -> Properties | None:
    """The MQTT 5 PUBLISH properties of `envelope`, or None when it has no headers."""
    if not envelope.headers:
        return None
    properties = Properties(PacketTypes.PUBLISH)
    users: list[tuple[str, str]] = []
    for name, values in envelope.headers.items():
        if not values:
            continue
        lowered = name.lower()
        if lowered not in _OWN:
            original = unescape_header_name(name)
            check_text("user property name", original)
            for value in values:
                text = decode_text_value(value)
                check_text(f"user property {original!r}", text)
                users.append((original, text))
        elif lowered == MQTT_CONTENT_TYPE.lower():
            properties.ContentType = decode_text_value(values[0])
            check_text(MQTT_CONTENT_TYPE, properties.ContentType)
        elif lowered == MQTT_RESPONSE_TOPIC.lower():
            properties.ResponseTopic = decode_text_value(values[0])
            validate_topic(properties.ResponseTopic)
        elif lowered == MQTT_CORRELATION_DATA.lower():
            properties.CorrelationData = decode_value(values[0])
        elif lowered == MQTT_PAYLOAD_FORMAT.lower() and values[0] in ("0", "1"):
            properties.PayloadFormatIndicator = int(values[0])
        elif lowered == MQTT_MESSAGE_EXPIRY.lower() and _expiry(values[0]) is not None:
            properties.MessageExpiryInterval = _expiry(values[0])
    if users:
        properties.UserProperty = users
    return properties


def _expiry(value: str) -> int | None:
    if value.isascii() and value.isdigit() and int(value) <= MAX_EXPIRY:
        return int(value)
    return None
