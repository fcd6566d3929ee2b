"""The `mqtt` kind: what the core knows about MQTT routes, declared through natsbridge.sdk.

Importing this module does not import paho-mqtt: `open_source` and `open_sink` do, so
``natsbridge validate`` works without the ``mqtt`` extra installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

from natsbridge.connectors.mqtt import topics
from natsbridge.connectors.mqtt.config import MqttConnection, MqttSink, MqttSource
from natsbridge.sdk import (
    BridgeSettings,
    ConnectorKind,
    Delivery,
    Envelope,
    Feature,
    Finding,
    Matcher,
    Model,
    Placeholder,
    Route,
    RouteSpec,
    Side,
    Sink,
    Source,
    first_match,
)

MQTT_TOPIC = "Mqtt-Topic"
"""The header a source adds: the topic the message was published to."""


class MqttOrigin(NamedTuple):
    """Where an MQTT message came from: its connection and the topic it was published to."""

    connection: str
    kind: str
    topic: str | None = None


def _topic(env: Envelope) -> str:
    o = env.origin
    topic = getattr(o, "topic", None)
    return topic if topic is not None else env.subject


def _topic_tokens(env: Envelope) -> str:
    return topics.topic_to_subject(_topic(env))


def client_id(connection: MqttConnection, bridge: BridgeSettings, route: str, role: str) -> str:
    """The fixed client id of a route's source ("in") or sink ("out") on `connection`.

    One per route and role, and per replica (`bridge.replica`): two clients with one id
    would keep taking the session from each other. Names hold no ':', so the ids of
    different routes and replicas never collide.
    """
    prefix = connection.client_id or f"natsbridge-{bridge.id}"
    return f"{prefix}:{route}:{role}" + (f":{bridge.replica}" if bridge.replica else "")


def share_group(bridge: BridgeSettings, route: str) -> str | None:
    """The shared-subscription group of a route's replicas; None for a lone process."""
    return f"natsbridge-{bridge.id}-{route}" if bridge.replica else None


class MqttKind(ConnectorKind):
    """MQTT 3.1.1 and 5 (Mosquitto, EMQX, HiveMQ ...): topics, ``+`` and ``#`` filters."""

    name = "mqtt"
    connection_model = MqttConnection
    source_model = MqttSource
    sink_model = MqttSink
    sink_templates = ("topic",)
    address = Placeholder(_topic, _topic_tokens)
    address_noun = "topic"
    # {{topic}}: the topic as published; into a NATS subject one escaped token per level
    placeholders: ClassVar[Mapping[str, Placeholder]] = {
        "topic": Placeholder(_topic, _topic_tokens)
    }
    coordinate_headers = (MQTT_TOPIC,)
    drivers = ("paho",)
    extra = "mqtt"
    direct = ("an MQTT source with qos 1", "an MQTT sink with qos 1")

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The subscribed topic filters."""
        assert isinstance(source, MqttSource)
        return tuple(source.topics)

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """Topics against the filters, in order: the levels each ``+`` matched."""
        return first_match(patterns, topics.match)

    def stars(self, pattern: str) -> int:
        """The ``+`` levels of a filter (``{{wildcard(n)}}`` is the n-th)."""
        return topics.count_plus(pattern)

    def check_address(self, connection: Model) -> Callable[[str], None]:
        """A rendered topic must be a topic name a PUBLISH can carry."""
        return topics.validate_topic

    def dedup_id(self, envelope: Envelope) -> str | None:
        """None: an MQTT message has no id that survives a redelivery."""
        return None

    def supports(self, feature: Feature, side: Side, endpoint: Model) -> bool:
        """buffer none needs qos 1: the broker redelivers, and confirms, only at qos 1."""
        if feature == "direct":
            assert isinstance(endpoint, MqttSource | MqttSink)
            return endpoint.qos >= 1
        return super().supports(feature, side, endpoint)

    def label(self, endpoint: Model) -> str:
        """``MQTT qos 0`` or ``MQTT qos 1``."""
        assert isinstance(endpoint, MqttSource | MqttSink)
        return f"MQTT qos {endpoint.qos}"

    def check_source(self, source: Model, route: RouteSpec | None) -> Iterator[Finding]:
        """QoS 0 cannot keep at_least_once; nothing identifies a message for exactly_once."""
        assert isinstance(source, MqttSource)
        if route is None:
            return
        if route.delivery is Delivery.EXACTLY_ONCE:
            yield Finding(
                ("delivery",),
                "exactly_once needs a stable message id, and MQTT messages have none: "
                "use at_least_once",
            )
        elif route.delivery is Delivery.AT_LEAST_ONCE and source.qos == 0:
            yield Finding(
                ("from", "qos"),
                "qos 0 is at most once (the broker never redelivers): use qos 1, or "
                "delivery: at_most_once",
            )

    def check_sink(self, sink: Model, route: RouteSpec | None) -> Iterator[Finding]:
        """QoS 0 is never confirmed: it cannot keep at_least_once."""
        assert isinstance(sink, MqttSink)
        if route is not None and route.delivery is not Delivery.AT_MOST_ONCE and sink.qos == 0:
            yield Finding(
                ("to", "qos"),
                "qos 0 is never confirmed by the broker: use qos 1, or delivery: at_most_once",
            )

    def writes_back(self, source: Model) -> dict[str, Any]:
        """The topic of a source of one topic without wildcards."""
        assert isinstance(source, MqttSource)
        filters = source.topics
        plain = len(filters) == 1 and not any(mark in filters[0] for mark in ("+", "#"))
        return {"topic": filters[0], "qos": source.qos} if plain else {}

    def describe_source(self, source: Model) -> str:
        """``topics a/+, b/# qos 1``."""
        assert isinstance(source, MqttSource)
        return f"topics {', '.join(source.topics)} qos {source.qos}"

    def describe_sink(self, sink: Model) -> str:
        """``topic T qos 1`` (and ``retained``)."""
        assert isinstance(sink, MqttSink)
        return f"topic {sink.topic} qos {sink.qos}" + (" retained" if sink.retain else "")

    def preview_origin(self, source: Model, address: str, partition: int | None) -> MqttOrigin:
        """A message published to topic `address`."""
        assert isinstance(source, MqttSource)
        return MqttOrigin(source.connection, "mqtt", address)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """A persistent-session subscription (connectors/mqtt/source.py)."""
        from natsbridge.connectors.mqtt.source import MqttTopicSource

        assert isinstance(connection, MqttConnection)
        return MqttTopicSource(
            route,
            connection,
            client_id(connection, bridge, route.name, "in"),
            share_group(bridge, route.name),
        )

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """PUBACK-confirmed publishes (connectors/mqtt/sink.py)."""
        from natsbridge.connectors.mqtt.sink import MqttTopicSink

        assert isinstance(connection, MqttConnection)
        return MqttTopicSink(route, connection, client_id(connection, bridge, route.name, "out"))


connector = MqttKind()
"""The `mqtt` kind (entry point ``natsbridge.connectors: mqtt``)."""
