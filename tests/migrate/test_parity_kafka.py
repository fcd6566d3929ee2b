"""`parity` and `lag` of a Kafka migration on the real Kafka and JetStream.

The mirror (a real `natsbridge run` of the route `<name>.to-nats`) copies a topic of two
partitions into a stream; then a copy is deleted from the stream (missing, with its
topic/partition/offset), a message is injected into it (extra, with its sequence), and
records produced while the mirror is stopped are pending and count as lag.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import nats
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from natsbridge.bridge.cli import main
from natsbridge.bridge.migrate.lag import lag
from natsbridge.bridge.migrate.parity import parity
from tests.migrate.parity_helpers import delete_and_inject, migration_of, mirror, mirror_config

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

RECORDS = 30


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i in range(start, start + count):
            producer.send(
                topic,
                key=b"k%d" % i,
                value=b"order %d" % i,
                headers=[("trace", b"t%d" % i)],
                partition=i % 2,
            )
        producer.flush()
    finally:
        producer.close()


async def first_copy_of_partition(nats_url: str, stream: str, partition: int) -> dict[str, int]:
    """The stream sequence and Kafka offset of the oldest copy from `partition`."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for seq in range(1, RECORDS + 1):
            msg = await js.get_msg(stream, seq)
            headers = msg.headers or {}
            if headers.get("Kafka-Partition") == str(partition):
                return {"seq": seq, "offset": int(headers["Kafka-Offset"])}
        raise AssertionError(f"no copy from partition {partition}")
    finally:
        await nc.close()


def test_kafka_parity_reports_a_deleted_copy_missing_and_an_injected_one_extra(
    tmp_path: Path, kafka_bootstrap: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, topic, stream = f"par-{tag}", f"parity-{tag}", f"PARITY_{tag}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()
    produce(kafka_bootstrap, topic, 0, RECORDS)
    path = mirror_config(
        tmp_path,
        name,
        {"connection": "kafka", "topics": [topic]},
        {
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        {"subject": f"parity.{tag}.{{{{partition}}}}", "stream": stream},
    )
    mirror(path, nats_url, stream, RECORDS)
    config, migration = migration_of(path)

    report = asyncio.run(parity(config, migration, 600))
    assert report.ok, report.to_json()
    half = RECORDS // 2
    assert report.counts == {
        "legacy": {f"{topic}/0": half, f"{topic}/1": half},
        "nats": {f"{topic}/0": half, f"{topic}/1": half},
    }
    assert report.digests["legacy"] == report.digests["nats"]
    measured = asyncio.run(lag(config, migration))
    assert (measured.legacy, measured.nats) == (0, None)
    assert main(["migrate", "verify", name, "-c", str(path), "--window", "10m"]) == 0
    assert f"{name}: parity holds over the last 10m" in capsys.readouterr().out

    dropped = asyncio.run(first_copy_of_partition(nats_url, stream, 1))
    injected = asyncio.run(delete_and_inject(nats_url, stream, dropped["seq"], f"parity.{tag}.x"))
    report = asyncio.run(parity(config, migration, 600))
    assert report.missing == [{"topic": topic, "partition": 1, "offset": dropped["offset"]}]
    assert report.extra == [{"stream": stream, "seq": injected, "subject": f"parity.{tag}.x"}]
    assert not report.ok and not report.differ and report.pending == 0
    assert main(["migrate", "verify", name, "-c", str(path), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert (printed["missing"], printed["extra"]) == (report.missing, report.extra)
    assert main(["migrate", "verify", name, "-c", str(path)]) == 1
    text = capsys.readouterr().out
    assert f"topic {topic} partition 1 offset {dropped['offset']}" in text
    assert f"stream {stream} seq {injected} subject parity.{tag}.x" in text

    produce(kafka_bootstrap, topic, RECORDS, 4)  # the mirror is stopped: lag, not loss
    report = asyncio.run(parity(config, migration, 600))
    assert report.pending == 4 and len(report.missing) == 1
    assert asyncio.run(lag(config, migration)).legacy == 4
