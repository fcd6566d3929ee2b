"""MQTT 5 properties <-> NATS headers, without a broker: round trips and reserved names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from natsbridge.bridge.errors import MappingError
from natsbridge.connectors.mqtt.message import EnvelopeReader, publish_properties
from natsbridge.mappings.headers import validate_headers

# What an MQTT string may hold: no control characters, surrogates or noncharacters.
mqtt_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=12
)


def received(
    properties: Properties | None, topic: str = "a/b", retain: bool = False
) -> MQTTMessage:
    message = MQTTMessage(mid=1, topic=topic.encode())
    message.payload = b"\x00payload"
    message.retain = retain
    if properties is not None:
        message.properties = properties
    return message


@given(st.lists(st.tuples(mqtt_text, mqtt_text), max_size=6))
def test_user_properties_survive_mqtt_nats_mqtt(pairs: list[tuple[str, str]]) -> None:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = pairs
    envelope = EnvelopeReader("m").envelope(received(properties))
    validate_headers(envelope.headers)  # every name and value is one NATS can carry
    out = publish_properties(envelope)
    assert out is not None
    back = getattr(out, "UserProperty", [])
    # grouped by name, in order within a name (MQTT 5 keeps the order across names too)
    for name in {n for n, _ in pairs}:
        assert [v for n, v in back if n == name] == [v for n, v in pairs if n == name]
    assert len(back) == len(pairs)


def test_properties_and_reserved_names() -> None:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("Nats-Rollup", "all"), ("Mqtt-Topic", "fake"), ("x y", "1")]
    properties.ContentType = "text/plain"
    properties.CorrelationData = b"\xff\x00"
    properties.ResponseTopic = "replies/7"
    properties.PayloadFormatIndicator = 1
    properties.MessageExpiryInterval = 60
    envelope = EnvelopeReader("m").envelope(received(properties, retain=True))
    assert envelope.headers["%4Eats-Rollup"] == ["all"]  # never a JetStream directive
    assert envelope.headers["%4Dqtt-Topic"] == ["fake"]  # never the connector's own header
    assert envelope.headers["Mqtt-Topic"] == ["a/b"]
    assert envelope.headers["Mqtt-Retain"] == ["true"]
    assert envelope.headers["x%20y"] == ["1"]
    assert envelope.headers["Mqtt-Correlation-Data"] == ["base64:/wA="]
    out = publish_properties(envelope)
    assert out is not None
    assert out.UserProperty == [("Nats-Rollup", "all"), ("Mqtt-Topic", "fake"), ("x y", "1")]
    assert (out.ContentType, out.CorrelationData, out.ResponseTopic) == (
        "text/plain",
        b"\xff\x00",
        "replies/7",
    )
    assert (out.PayloadFormatIndicator, out.MessageExpiryInterval) == (1, 60)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": ["base64:AQ=="]},  # decodes to \x01
        {"Mqtt-Content-Type": ["base64:AA=="]},
        {"Mqtt-Response-Topic": ["a/+"]},
        {"%01": ["x"]},
    ],
)
def test_what_an_mqtt_string_cannot_carry_is_refused(headers: dict[str, list[str]]) -> None:
    envelope = EnvelopeReader("m").envelope(received(None))
    envelope.headers.update(headers)
    with pytest.raises(MappingError):
        publish_properties(envelope)
