"""The Kafka topics a kafka route declares, and what a cluster has.

A sink creates a missing topic unless ``to.create: false``, with ``to.create_topic``
(partitions, replication factor; default 1 and 1); the keys of ``create_topic`` that the
config sets are compared with an existing topic. A templated topic is declared when a
message first names it (it is logged then). A source never creates its topics: they are
listed so that ``run --dry-run`` shows a missing one. confluent-kafka is imported inside
the functions.
"""

from __future__ import annotations

import asyncio

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.kind import Side
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSink, KafkaSource

RESOURCE = "Kafka topic"


def topic_declaration(sink: KafkaSink, topic: str, route_name: str) -> Declaration:
    """Topic `topic` as sink `sink` of route `route_name` creates it."""
    creation = sink.topic_creation
    settings: dict[str, object] = {}
    if creation is not None:
        settings = {
            "partitions": creation.partitions,
            "replication_factor": creation.replication_factor,
        }
    compared = sink.create_topic.model_fields_set if sink.create_topic is not None else set()
    return Declaration(
        resource=RESOURCE,
        name=topic,
        connection=sink.connection,
        settings=settings,
        compared=frozenset(compared),
        create=creation is not None,
        why_not_created="to.create is false",
        where=f"route '{route_name}' to.create_topic",
    )


def declarations(route: Route, side: Side) -> list[Declaration]:
    """The sink's topic when literal; the source's named topics (never created)."""
    if side == "to":
        assert isinstance(route.sink, KafkaSink)
        template = route.templates.get("topic")
        if template is None or not template.is_literal:
            return []
        return [topic_declaration(route.sink, template.text, route.name)]
    source = route.source
    assert isinstance(source, KafkaSource)
    return [
        Declaration(
            resource=RESOURCE,
            name=topic,
            connection=source.connection,
            create=False,
            why_not_created="a Kafka source never creates topics",
            where=f"route '{route.name}' from.topics",
        )
        for topic in source.topics or []
    ]


def _observe(connection: KafkaConnection, declarations: list[Declaration]) -> list[Observed]:
    from natsbridge.connectors.kafka.client import CONNECT_TIMEOUT_S, admin

    metadata = admin(connection).list_topics(timeout=CONNECT_TIMEOUT_S)
    found: list[Observed] = []
    for declaration in declarations:
        described = metadata.topics.get(declaration.name)
        if described is None or described.error is not None or not described.partitions:
            found.append(None)
            continue
        first = min(described.partitions)
        found.append(
            {
                "partitions": len(described.partitions),
                "replication_factor": len(described.partitions[first].replicas),
            }
        )
    return found


async def observe(connection: KafkaConnection, declarations: list[Declaration]) -> list[Observed]:
    """Each declared topic's partitions and replication factor, None where missing."""
    return await asyncio.to_thread(_observe, connection, declarations)
