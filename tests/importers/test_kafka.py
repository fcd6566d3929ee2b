"""`natsbridge import kafka` on the dev Kafka: five topics of this test's own, two groups.

Topics and committed offsets are made with kafka-python (the oracle client; the importer
reads through confluent-kafka's admin client), and the generated config is held to a snapshot.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

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
    assert "natsbridge import: 5 migrations to " in result.stderr
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


def test_an_unreachable_cluster_is_one_line(unique_name: str) -> None:
    result = natsbridge(
        "import", "kafka", "--bootstrap", "127.0.0.1:1", "--topics", unique_name, "--timeout", "2"
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
