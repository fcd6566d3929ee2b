"""Per-key order end to end across replicas: `buffer: jetstream` with `max_in_flight: 1`.

README, Scale out (Order): the buffer stream's consumer lets all replicas together have
`max_in_flight` messages out, and a Kafka partition is read by one replica at a time, so
with `max_in_flight: 1` the records of one key (one partition) reach the destination in
their order, whichever replica took each from Kafka and whichever sent it on. Three
replicas of one config carry a Kafka -> JetStream route; COUNT keyed records are produced
once the consumer group is stable (a rebalance may repeat records: README, Workers and
replicas), and every record must arrive once, each key's in increasing sequence.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.test_jetstream_buffer import js_cleanup, js_read
from tests.e2e.test_kafka_bridge import create_topic, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

REPLICAS = 3
PARTITIONS = 6
KEYS = 24
COUNT = 3000


@pytest.fixture
def tag(nats_url: str, nats_cluster_urls: list[str]) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    asyncio.run(js_cleanup(nats_url, nats_cluster_urls, tag))


def config(tag: str, kafka: str, nats_url: str, cluster: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {
            "id": f"order-{tag}",
            "replica": "${env:NATSBRIDGE_REPLICA}",
            # max_bytes is reserved on every node: the default (1 GiB) would take an eighth
            # of the harness cluster's store, which other tests' buffers share.
            "buffer": {"mode": "jetstream", "connection": "cluster", "max_bytes": "64MiB"},
        },
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka]},
            "nats": {"kind": "nats", "servers": [nats_url]},
            "cluster": {"kind": "nats", "servers": cluster},
        },
        "routes": [
            {
                "name": f"k-{tag}",
                "from": {"connection": "kafka", "topics": [f"order-{tag}"]},
                "to": {
                    "connection": "nats",
                    "subject": f"order{tag}.out",
                    "jetstream": {"stream": f"ORDER_{tag}"},
                },
                "max_in_flight": 1,
            }
        ],
    }


def group_assignment(bootstrap: str, group: str) -> dict[str, set[int]] | None:
    """Member id -> its partitions while the group is stable, else None (the broker's view)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group], request_timeout=10).values()
    description = future.result()
    if description.state is not ConsumerGroupState.STABLE:
        return None
    return {
        member.member_id: {tp.partition for tp in member.assignment.topic_partitions}
        for member in description.members
    }


def spread(assignment: dict[str, set[int]] | None) -> bool:
    """Every replica a member holding partitions, together all of them."""
    return (
        assignment is not None
        and len(assignment) == REPLICAS
        and all(assignment.values())
        and set().union(*assignment.values()) == set(range(PARTITIONS))
    )


def test_replicas_keep_each_keys_order_with_max_in_flight_1(
    tmp_path: Path,
    kafka_bootstrap: str,
    nats_url: str,
    nats_cluster_urls: list[str],
    tag: str,
) -> None:
    topic, route, group = f"order-{tag}", f"k-{tag}", f"natsbridge-k-{tag}"
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    path = write_config(
        tmp_path / "bridge.yaml", config(tag, kafka_bootstrap, nats_url, nats_cluster_urls)
    )
    replicas = [
        BridgeProcess(path, tmp_path / f"replica-{n}", env={"NATSBRIDGE_REPLICA": f"r{n}"})
        for n in range(REPLICAS)
    ]
    try:
        for replica in replicas:
            replica.start(wait_ready=False)
        for replica in replicas:
            replica.wait_ready()
        wait_for(
            lambda: spread(group_assignment(kafka_bootstrap, group)),
            what=f"the group stable, its partitions over {REPLICAS} replicas",
        )
        before = group_assignment(kafka_bootstrap, group)
        records = [(b"k%d" % (i % KEYS), b"k%d:%d" % (i % KEYS, i), []) for i in range(COUNT)]
        produce(kafka_bootstrap, topic, records)  # type: ignore[arg-type]
        wait_for(
            lambda: asyncio.run(stream_count(nats_url, f"ORDER_{tag}")) >= COUNT,
            what=f"{COUNT} in the destination stream",
        )
        assert group_assignment(kafka_bootstrap, group) == before, "a rebalance during the run"
        counters = [replica.routes()[route]["counters"] for replica in replicas]
        for replica in replicas:
            assert replica.terminate() == 0, replica.tail()
    finally:
        for replica in replicas:
            replica.stop()
    # Several replicas took records from Kafka and several sent them on: order is kept
    # across replicas, not by one of them doing everything.
    assert sum(1 for c in counters if c["received"]) > 1, counters
    assert sum(1 for c in counters if c["delivered"]) > 1, counters
    values = [payload.decode() for payload in asyncio.run(js_read(nats_url, f"ORDER_{tag}"))]
    assert sorted(values) == sorted(value.decode() for _, value, _ in records), "lost or repeated"
    last: dict[str, int] = {}
    for value in values:  # stream order
        key, seq = value.split(":")
        assert int(seq) > last.get(key, -1), f"key {key}: {seq} after {last[key]}"
        last[key] = int(seq)
