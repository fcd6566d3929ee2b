"""The `kafka` kind: what the core knows about Kafka routes (see bridge.kind)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from natsbridge.bridge.config.model import Delivery, Endpoint, Model
from natsbridge.bridge.config.source import shorten
from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import TemplateError
from natsbridge.bridge.kind import ConnectorKind, Finding, Placeholder, Side
from natsbridge.connectors.kafka.config import (
    TRANSACTIONS_NEED,
    KafkaConnection,
    KafkaSink,
    KafkaSource,
)
from natsbridge.connectors.kafka.declare import declarations as declared_by
from natsbridge.connectors.kafka.declare import observe as observe_topics
from natsbridge.mappings import kafka
from natsbridge.mappings.escaping import escape_bytes_words
from natsbridge.mappings.headers import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route
    from natsbridge.bridge.config.model import BridgeSettings, RouteSpec
    from natsbridge.bridge.connector import Sink, Source

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class KafkaOrigin(NamedTuple):
    """Where a record from Kafka came from."""

    connection: str
    kind: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def _topic(env: Envelope) -> str:
    o = env.origin
    return o.topic if o is not None and o.topic is not None else env.subject


def _partition(env: Envelope) -> str:
    o = env.origin
    if o is None or o.partition is None:
        raise TemplateError("{{partition}}: the message's origin has no partition")
    return str(o.partition)  # digits: a valid token as it is


def _key(env: Envelope) -> str:
    key = env.key
    if key is None:
        raise TemplateError("{{key}}: the message has no Kafka key")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError("{{key}}: the Kafka key is not UTF-8 text") from None


def _key_tokens(env: Envelope) -> str:
    key = env.key
    if key is None:
        raise TemplateError("{{key}}: the message has no Kafka key")
    return escape_bytes_words(key)  # any bytes, reversibly


class KafkaKind(ConnectorKind):
    """Apache Kafka: topics, partitions and offsets, keyed records."""

    name = "kafka"
    connection_model = KafkaConnection
    source_model = KafkaSource
    sink_model = KafkaSink
    sink_templates = ("topic", "key")
    address = Placeholder(_topic)
    placeholders: ClassVar[Mapping[str, Placeholder]] = {
        "topic": address,
        "partition": Placeholder(_partition, _partition),
        "key": Placeholder(_key, _key_tokens),
    }
    coordinate_headers = (KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET)
    drivers = ("confluent_kafka",)
    extra = "kafka"
    exactly_once = "a Kafka sink"
    direct = ("a Kafka source", "a Kafka sink")

    def driver_loggers(self) -> Mapping[str, int]:
        """librdkafka speaks through the connector's logger (connectors/kafka/client.py);
        with ``--log-level debug --driver-logs`` its debug contexts are turned on too."""
        return {"natsbridge.kafka.librdkafka": logging.WARNING}

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The listed topics (names, matched exactly); a topic_pattern source takes all."""
        assert isinstance(source, KafkaSource)
        return tuple(source.topics) if source.topics else ()

    def check_address(self, connection: Model) -> Callable[[str], None]:
        """A rendered topic must be a legal Kafka topic name."""
        return kafka.validate_topic

    def dedup_id(self, envelope: Envelope) -> str | None:
        """``kafka:<topic>:<partition>:<offset>``: the record's coordinates, else its id."""
        o = envelope.origin
        if o is not None and o.offset is not None:
            return f"kafka:{o.topic}:{o.partition}:{o.offset}"
        return super().dedup_id(envelope)

    def check_sink(self, sink: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        """A literal topic that is not a Kafka topic name; what exactly_once needs (a remark)."""
        assert isinstance(sink, KafkaSink)
        if route is not None and route.delivery is Delivery.EXACTLY_ONCE:
            yield Finding(("delivery",), TRANSACTIONS_NEED, warning=True)
        topic = sink.topic
        if "{{" not in topic and (not _TOPIC.fullmatch(topic) or topic in (".", "..")):
            yield Finding(
                ("to", "topic"),
                "expected a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -, "
                f"found {shorten(repr(topic), 80)}",
            )

    def writes_back(self, source: Model) -> dict[str, Any]:
        """The topic of a source of one topic (the record key comes with the message)."""
        assert isinstance(source, KafkaSource)
        return {"topic": source.topics[0]} if source.topics and len(source.topics) == 1 else {}

    def reads_back(self, sink: Model, name: str) -> dict[str, Any]:
        """The topic a sink of one literal topic writes, read by consumer group `name`."""
        assert isinstance(sink, KafkaSink)
        if "{{" in sink.topic:
            return {}
        return {"topics": [sink.topic], "group_id": name}

    def describe_source(self, source: Model) -> str:
        """``topics a,b`` or ``topics /regex/``."""
        assert isinstance(source, KafkaSource)
        if source.topics:
            return f"topics {','.join(source.topics)}"
        return f"topics /{source.topic_pattern}/"

    def describe_sink(self, sink: Model) -> str:
        """``topic T[ key K]``."""
        assert isinstance(sink, KafkaSink)
        return f"topic {sink.topic}" + (f" key {sink.key}" if sink.key else "")

    def preview_origin(self, source: Endpoint, address: str, partition: int | None) -> KafkaOrigin:
        """A record of topic `address` at offset 0 of `partition` (default 0)."""
        return KafkaOrigin(
            source.connection, "kafka", topic=address, partition=partition or 0, offset=0
        )

    def declarations(self, route: Route, side: Side) -> list[Declaration]:
        """The sink's literal topic; the source's named topics (connectors/kafka/declare.py)."""
        return declared_by(route, side)

    async def observe(self, connection: Model, declarations: list[Declaration]) -> list[Observed]:
        """Each topic's partitions and replication factor (metadata), None where missing."""
        assert isinstance(connection, KafkaConnection)
        return await observe_topics(connection, declarations)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """A consumer-group source (connectors/kafka/source.py)."""
        from natsbridge.connectors.kafka.source import KafkaTopicSource

        assert isinstance(connection, KafkaConnection)
        return KafkaTopicSource(route, connection, route.source.connection)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """An idempotent producer; a transactional one (``<bridge id>.<route>``) under
        exactly_once (connectors/kafka/sink.py)."""
        from natsbridge.connectors.kafka.sink import KafkaTopicSink

        assert isinstance(connection, KafkaConnection)
        once = route.spec.delivery is Delivery.EXACTLY_ONCE
        transactional_id = f"{bridge.id}.{route.name}" if once else None
        return KafkaTopicSink(route, connection, route.sink.connection, None, transactional_id)


connector = KafkaKind()
"""The `kafka` kind (entry point ``natsbridge.connectors: kafka``)."""
