"""`natsbridge import kafka`: a Kafka cluster's topics become one migration each.

Reads, through confluent-kafka's admin client (`read_cluster`): the topics (those whose
name matches `--topics REGEX` in full; internal `__*` topics never), their partition counts
and replication, their `retention.ms`, `retention.bytes`, `cleanup.policy` and
`max.message.bytes`, and every consumer group's committed offsets, to name the legacy
consumers of each topic. Then, without I/O (`plan_kafka`):

* each topic becomes a migration tapped by the bridge's own consumer group (legacy groups
  notice nothing), with subject `PREFIX.<topic>`, or `PREFIX.<topic>.{{partition}}` when the
  topic has several partitions: Kafka orders per partition, and a subject per partition
  lets a NATS consumer keep that order;
* retention sizes the JetStream stream (`retention.bytes` is per partition in Kafka);
* compaction, records larger than NATS's default payload and the legacy groups are noted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from natsbridge.bridge.importers.names import Namer
from natsbridge.bridge.importers.plan import ImportFailed, ImportPlan, Migration, StreamLimits
from natsbridge.bridge.importers.writer import shown

NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024  # bytes: nats-server's max_payload unless configured
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # a 1 MiB record plus its batch header
_CONFIG_KEYS = ("retention.ms", "retention.bytes", "cleanup.policy", "max.message.bytes")


@dataclass(frozen=True)
class TopicFacts:
    """What the cluster says about one topic."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str]
    groups: tuple[str, ...]  # consumer groups with committed offsets on the topic


def read_cluster(
    bootstrap: str, topics: re.Pattern[str] | None, timeout: float
) -> list[TopicFacts]:
    """The facts of every topic `topics` matches in full; ImportFailed if Kafka does not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, untyped
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    quiet = logging.getLogger("natsbridge.import.kafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # librdkafka reports each failed connection attempt
    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    admin = AdminClient(settings)
    try:
        metadata = admin.list_topics(timeout=timeout)
        names = sorted(
            name
            for name in metadata.topics
            if not name.startswith("__") and (topics is None or topics.fullmatch(name))
        )
        if not names:
            return []
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        configs = {
            resource.name: {
                key: entry.value
                for key, entry in future.result(timeout=timeout).items()
                if key in _CONFIG_KEYS and entry.value is not None
            }
            for resource, future in admin.describe_configs(resources).items()
        }
        groups = _groups_by_topic(admin, set(names), timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        reason = error.str() if hasattr(error, "str") else str(error)  # a KafkaError's text
        raise ImportFailed(f"Kafka at {bootstrap}: {reason}") from None
    return [
        TopicFacts(
            name=name,
            partitions=len(metadata.topics[name].partitions),
            replication=max(
                (len(p.replicas) for p in metadata.topics[name].partitions.values()), default=0
            ),
            config=configs.get(name, {}),
            groups=tuple(sorted(groups.get(name, ()))),
        )
        for name in names
    ]


def _groups_by_topic(admin: Any, names: set[str], timeout: float) -> dict[str, set[str]]:
    """Each topic's consumer groups, from their committed offsets (one request per group)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    listing = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    futures = [
        future
        for group in listing.valid
        for future in admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group.group_id)], request_timeout=timeout
        ).values()
    ]
    by_topic: dict[str, set[str]] = {}
    for future in futures:
        offsets = future.result(timeout=timeout)
        for partition in offsets.topic_partitions or ():
            if partition.topic in names:
                by_topic.setdefault(partition.topic, set()).add(offsets.group_id)
    return by_topic


def plan_kafka(topics: list[TopicFacts], bootstrap: str, prefix: str, command: str) -> ImportPlan:
    """One migration per topic; ImportFailed when there is none."""
    if not topics:
        raise ImportFailed(f"Kafka at {bootstrap}: no topic to import (internal __* topics never)")
    plan = ImportPlan(
        command=command,
        legacy_name="kafka",
        legacy_connection={
            "kind": "kafka",
            "bootstrap_servers": [server.strip() for server in bootstrap.split(",")],
        },
        notes=[
            "the kafka connection is PLAINTEXT: add security_protocol, sasl_* and tls for a "
            "secured cluster.",
        ],
    )
    namer = Namer()
    for topic in topics:
        plan.migrations.append(_migration(topic, namer, prefix))
    return plan


def _migration(topic: TopicFacts, namer: Namer, prefix: str) -> Migration:
    name = namer.migration(topic.name)
    subject = f"{prefix}.{namer.token(topic.name)}"
    consumers = ", ".join(map(shown, topic.groups)) or "none with committed offsets"
    migration = Migration(
        name=name,
        legacy={"topics": [topic.name]},
        subject=subject + (".{{partition}}" if topic.partitions > 1 else ""),
        stream=namer.stream(name),
        stream_subject=subject + (".>" if topic.partitions > 1 else ""),
        title=(
            f"topic {shown(topic.name)}: {topic.partitions} partition"
            f"{'s' if topic.partitions != 1 else ''}, replication {topic.replication}; "
            f"consumer groups: {consumers}"
        ),
        limits=_limits(topic),
    )
    if topic.partitions > 1:
        migration.notes.append(
            f"one subject per partition ({subject}.0 … .{topic.partitions - 1}): Kafka orders "
            "per partition, and a NATS consumer of one partition's subject keeps that order."
        )
    if "compact" in topic.config.get("cleanup.policy", ""):
        migration.notes.append(
            "compacted topic: JetStream keeps every record (its nearest equivalent, one "
            "message per subject with the key in the subject, is not mapped)."
        )
    max_bytes = _number(topic.config.get("max.message.bytes"))
    if max_bytes is not None and max_bytes > KAFKA_DEFAULT_MAX_MESSAGE_BYTES:
        migration.notes.append(
            f"records up to {max_bytes} bytes (max.message.bytes) exceed NATS's default "
            f"max_payload of {NATS_DEFAULT_MAX_PAYLOAD}: raise it on nats-server, or larger "
            "records are dead-lettered."
        )
    return migration


def _limits(topic: TopicFacts) -> StreamLimits:
    deletes = "delete" in topic.config.get("cleanup.policy", "delete")
    per_partition = _number(topic.config.get("retention.bytes")) if deletes else None
    return StreamLimits(
        max_bytes=per_partition * topic.partitions if per_partition is not None else None,
        max_age_ms=_number(topic.config.get("retention.ms")) if deletes else None,
    )


def _number(text: str | None) -> int | None:
    """A positive limit from a Kafka config value (-1 or absent: no limit)."""
    try:
        value = int(text) if text is not None else -1
    except ValueError:
        return None
    return value if value > 0 else None
