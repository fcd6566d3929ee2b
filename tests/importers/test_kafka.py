"""`natsbridge import kafka` on the dev Kafka: five topics of this test's own, two groups.

Topics and committed offsets are made with kafka-python (the oracle client; the importer
reads through confluent-kafka's admin client), and the generated config is held to a snapshot.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from natsbridge.bridge.importers.kafka import read_cluster
from natsbridge.bridge.importers.plan import ImportFailed
from tests.e2e.bridge_process import BridgeProcess
from tests.importers.snapshots import assert_snapshot, natsbridge

pytestmark = pytest.mark.kafka

TOPICS = {  # suffix: (partitions, topic configs)
    "orders": (3, {"retention.ms": "86400000", "retention.bytes": "1048576"}),
    "clicks": (1, {}),
    "users": (1, {"cleanup.policy": "compact"}),
    "media": (2, {"max.message.bytes": "4194304", "retention.ms": "-1"}),
    "audit": (1, {"retention.ms": "3600000", "cleanup.policy": "compact,delete"}),
}
GROUPS = {"billing": ("orders", "users"), "analytics": ("clicks",)}


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """The topics above, named `<prefix>.<suffix>`, and groups with committed offsets."""
    unique_name = f"imp{uuid.uuid4().hex[:8]}"  # short: the snapshot's comments wrap alike
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    names = [f"{unique_name}.{suffix}" for suffix in TOPICS]
    try:
        admin.create_topics(
            [
                NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=cfg)
                for name, (partitions, cfg) in zip(names, TOPICS.values(), strict=True)
            ]
        )
        for group, suffixes in GROUPS.items():
            consumer = KafkaConsumer(
                bootstrap_servers=kafka_bootstrap,
                group_id=f"{unique_name}-{group}",
                enable_auto_commit=False,
            )
            try:
                consumer.commit(
                    {
                        TopicPartition(f"{unique_name}.{suffix}", 0): OffsetAndMetadata(0, "", -1)
                        for suffix in suffixes
                    }
                )
            finally:
                consumer.close()
        yield unique_name
    finally:
        admin.delete_topics(names)
        admin.close()


def _import(bootstrap: str, prefix: str, *extra: str) -> str:
    result = natsbridge(
        "import", "kafka", "--bootstrap", bootstrap, "--topics", f"{re.escape(prefix)}\\..*", *extra
    )
    assert result.returncode == 0, result.stderr
    what = "routes" if "--routes" in extra else "migrations"
    assert f"natsbridge import: 5 {what} to " in result.stderr
    return result.stdout


def test_import_of_five_topics_matches_the_snapshot_and_validates(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    generated = _import(kafka_bootstrap, prefix)
    normalized = (
        generated.replace(kafka_bootstrap, "BOOTSTRAP")
        .replace(re.escape(prefix), "PREFIX")
        .replace(prefix, "PREFIX")
        .replace(prefix.upper(), "PREFIX")
    )
    assert_snapshot("kafka.yaml", normalized)

    routes = tmp_path / "routes.yaml"
    _import(kafka_bootstrap, prefix, "--routes", "-o", str(routes))
    valid = natsbridge("validate", "-c", str(routes))
    assert valid.returncode == 0, valid.stderr
    assert "valid, bridge 'import-kafka', 5 routes" in valid.stdout


def test_without_confluent_kafka_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails as if absent
    with pytest.raises(ImportFailed, match=r"pip install confluent-kafka"):
        read_cluster("127.0.0.1:1", None, 1.0)


def test_an_unreachable_cluster_is_one_line(unique_name: str) -> None:
    result = natsbridge(
        "import", "kafka", "--bootstrap", "127.0.0.1:1", "--topics", unique_name, "--timeout", "2s"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("natsbridge: Kafka at 127.0.0.1:1: ")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_the_migrations_form_validates(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    config = tmp_path / "migrations.yaml"
    _import(kafka_bootstrap, prefix, "-o", str(config))
    valid = natsbridge("validate", "-c", str(config))
    assert valid.returncode == 0, valid.stderr


RECORDS = {"orders": 30, "clicks": 10}
COPY_DEADLINE_S = 90.0  # a new consumer group joins and is assigned within this


@pytest.mark.nats
def test_the_imported_mirror_copies_each_partition_to_its_subject_and_leaves_groups_alone(
    kafka_bootstrap: str, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    per_subject: Counter[str] = Counter()
    for suffix, count in RECORDS.items():
        for n in range(count):
            sent = producer.send(f"{prefix}.{suffix}", key=str(n).encode(), value=b"payload")
            partition = sent.get(timeout=30).partition
            per_subject[
                f"legacy.{prefix}%2E{suffix}" + (f".{partition}" if suffix == "orders" else "")
            ] += 1
    producer.close()
    config = tmp_path / "routes.yaml"
    _import(kafka_bootstrap, prefix, "--routes", "-o", str(config))
    bridge = BridgeProcess(config, tmp_path / "data", env={"NATSBRIDGE_NATS_URL": nats_url})
    try:
        bridge.start()
        copied = _subjects_once_copied(nats_url, prefix, per_subject)
        assert copied == per_subject, bridge.tail()
        assert len([s for s in copied if ".orders" in s or "%2Eorders" in s]) > 1  # partitions
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
    # The legacy group's committed offsets did not move: the tap reads as its own group.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets(f"{prefix}-billing")[f"{prefix}-billing"]
    finally:
        admin.close()
    assert {tp.topic: meta.offset for tp, meta in offsets.items()} == {
        f"{prefix}.orders": 0,
        f"{prefix}.users": 0,
    }


def _subjects_once_copied(nats_url: str, prefix: str, expected: Counter[str]) -> Counter[str]:
    """Messages per subject in the orders and clicks streams, once they match or time is up."""
    streams = [f"{prefix.upper()}_{suffix.upper()}" for suffix in RECORDS]
    deadline = time.monotonic() + COPY_DEADLINE_S
    while True:
        copied = asyncio.run(_subjects(nats_url, streams))
        if copied == expected or time.monotonic() > deadline:
            return copied
        time.sleep(0.5)


async def _subjects(nats_url: str, streams: list[str]) -> Counter[str]:
    counted: Counter[str] = Counter()
    nc = await nats.connect(nats_url)
    try:
        for stream in streams:
            try:
                info = await nc.jetstream().stream_info(stream, subjects_filter=">")
            except nats.js.errors.NotFoundError:
                continue
            counted.update(info.state.subjects or {})
    finally:
        await nc.close()
    return counted
