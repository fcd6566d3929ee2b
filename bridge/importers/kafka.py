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
BRIDGE_GROUP_PREFIX = "natsbridge-"  # the default group_id of a bridge's kafka source
_CONFIG_KEYS = ("retention.ms", "retention.bytes", "cleanup.policy", "max.message.bytes")


@dataclass(frozen=True)
class TopicFacts:
    """What the cluster says about one topic."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str]
    groups: tuple[str, ...]  # consumer groups with committed offsets on the topic
    config_error: str | None = None  # why `config` is empty, if it could not be read
    metadata_error: str | None = None  # why the topic cannot be imported (no partitions…)


def read_cluster(
    bootstrap: str, topics: re.Pattern[str] | None, timeout: float
) -> list[TopicFacts]:
    """The facts of every topic `topics` matches in full; ImportFailed if Kafka does not answer."""
    try:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, untyped
            AdminClient,
            ConfigResource,
            ResourceType,
        )
    except ImportError:
        raise ImportFailed(
            "import kafka reads the cluster with confluent-kafka, which is not installed "
            "(pip install confluent-kafka)"
        ) from None

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
        configs: dict[str, dict[str, str]] = {}
        config_errors: dict[str, str] = {}
        for resource, future in admin.describe_configs(resources).items():
            try:
                entries = future.result(timeout=timeout)
            except KafkaException as exc:  # not allowed to describe it, deleted meanwhile…
                config_errors[resource.name] = _reason(exc)
                continue
            configs[resource.name] = {
                key: entry.value
                for key, entry in entries.items()
                if key in _CONFIG_KEYS and entry.value is not None
            }
        groups = _groups_by_topic(admin, set(names), timeout)
    except (KafkaException, TimeoutError) as exc:
        raise ImportFailed(f"Kafka at {bootstrap}: {_reason(exc)}") from None
    facts = []
    for name in names:
        topic = metadata.topics[name]
        facts.append(
            TopicFacts(
                name=name,
                partitions=len(topic.partitions),
                replication=max((len(p.replicas) for p in topic.partitions.values()), default=0),
                config=configs.get(name, {}),
                groups=tuple(sorted(groups.get(name, ()))),
                config_error=config_errors.get(name),
                metadata_error=_reason(topic.error) if topic.error else None,
            )
        )
    return facts


def _reason(error: Any) -> str:
    """The text of a KafkaException, KafkaError or timeout."""
    if isinstance(error, TimeoutError):
        return "no answer in time (--timeout)"
    if error.args and hasattr(error.args[0], "str"):
        error = error.args[0]  # a KafkaException carries a KafkaError
    return str(error.str()) if hasattr(error, "str") else str(error)


def _groups_by_topic(admin: Any, names: set[str], timeout: float) -> dict[str, set[str]]:
    """Each topic's consumer groups, from their committed offsets (one request per group)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException

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
        try:
            offsets = future.result(timeout=timeout)
        except KafkaException:
            continue  # a group deleted since it was listed: it consumes nothing
        for partition in offsets.topic_partitions or ():
            if partition.topic in names:
                by_topic.setdefault(partition.topic, set()).add(offsets.group_id)
    return by_topic


def plan_kafka(topics: list[TopicFacts], bootstrap: str, prefix: str, command: str) -> ImportPlan:
    """One migration per topic; ImportFailed when there is none."""
    if not topics:
        raise ImportFailed(
            f"Kafka at {bootstrap}: no topic to import (none matches --topics, or there are "
            "only internal __* topics)"
        )
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
        if topic.metadata_error or not topic.partitions:
            reason = topic.metadata_error or "no partitions in the cluster's metadata"
            plan.skipped.append(f"topic {shown(topic.name)}: {reason}")
        else:
            plan.migrations.append(_migration(topic, namer, prefix))
    if not plan.migrations:
        raise ImportFailed(f"Kafka at {bootstrap}: no topic to import ({plan.skipped[0]})")
    return plan


def _migration(topic: TopicFacts, namer: Namer, prefix: str) -> Migration:
    name = namer.migration(topic.name)
    subject = f"{prefix}.{namer.token(topic.name)}"
    legacy_groups = [g for g in topic.groups if not g.startswith(BRIDGE_GROUP_PREFIX)]
    bridge_groups = [g for g in topic.groups if g.startswith(BRIDGE_GROUP_PREFIX)]
    consumers = ", ".join(map(shown, legacy_groups)) or "none with committed offsets"
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
    if bridge_groups:
        migration.notes.append(
            f"natsbridge already reads this topic (group {', '.join(map(shown, bridge_groups))})."
        )
    if topic.config_error:
        migration.notes.append(
            f"its configs could not be read ({topic.config_error}): no stream limits derived."
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
