"""Kafka's SASL listeners of deploy/dev/services.sh, through `natsbridge run` with real routes.

One bridge per listener, its Kafka connection on that listener only, with two routes:
NATS -> Kafka (the sink logs in) and Kafka -> JetStream (the source logs in). The test's
oracle is kafka-python on the PLAINTEXT listener of the same broker: it reads what the
sink wrote and writes what the source reads.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from tests.conftest import HINT, in_ci
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

COUNT = 200

LISTENERS = {
    "scram-sha-512": ("NATSBRIDGE_KAFKA_SCRAM512_BOOTSTRAP", "SASL_PLAINTEXT", "SCRAM-SHA-512"),
    "sasl-ssl": ("NATSBRIDGE_KAFKA_SASL_SSL_BOOTSTRAP", "SASL_SSL", "SCRAM-SHA-512"),
    "plain": ("NATSBRIDGE_KAFKA_PLAIN_BOOTSTRAP", "SASL_PLAINTEXT", "PLAIN"),
}


def _env(var: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        message = f"{var} is not set: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return value


@pytest.fixture(params=sorted(LISTENERS))
def secured(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `connections.kafka` of a bridge on one SASL listener."""
    var, protocol, mechanism = LISTENERS[request.param]
    connection: dict[str, Any] = {
        "kind": "kafka",
        "bootstrap_servers": [_env(var)],
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_username": _env("NATSBRIDGE_KAFKA_SASL_USER"),
        "sasl_password": _env("NATSBRIDGE_KAFKA_SASL_PASSWORD"),
    }
    if protocol == "SASL_SSL":
        connection["tls"] = {"ca_file": _env("NATSBRIDGE_KAFKA_TLS_CA_FILE")}
    return connection


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[list[BridgeProcess]]:
    made: list[BridgeProcess] = []
    yield made
    for process in made:
        process.stop()


def test_routes_in_and_out_of_kafka_over_the_listener(
    secured: dict[str, Any],
    kafka_bootstrap: str,
    nats_url: str,
    tmp_path: Path,
    bridge: list[BridgeProcess],
) -> None:
    tag = uuid.uuid4().hex[:8]
    # two topics: a record the bridge wrote would come back to it as a loop and be dropped
    written, read, stream = f"e2e-sasl-out-{tag}", f"e2e-sasl-in-{tag}", f"SASL_{tag}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        spec = {"num_partitions": 1, "replication_factor": 1}
        admin.create_topics({written: spec, read: spec}, wait_for_metadata=True)
    finally:
        admin.close()
    config = {
        "version": 1,
        "bridge": {"id": f"e2e-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {"kafka": secured, "nats": {"kind": "nats", "servers": [nats_url]}},
        "routes": [
            {
                "name": "nats-to-kafka",
                "from": {"connection": "nats", "subject": f"in{tag}.*"},
                "to": {"connection": "kafka", "topic": written, "key": "{{wildcard(1)}}"},
            },
            {
                "name": "kafka-to-js",
                "from": {"connection": "kafka", "topics": [read], "group_id": f"g-{tag}"},
                "to": {
                    "connection": "nats",
                    "subject": f"out{tag}.x",
                    "jetstream": {"stream": stream},
                },
            },
        ],
    }
    process = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
    bridge.append(process)
    process.start()
    sent = [f"m{i}".encode() for i in range(COUNT)]

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        for value in sent:
            await nc.publish(f"in{tag}.k{value[-1:].decode()}", value)
        await nc.flush()
        await nc.close()

    asyncio.run(publish())
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for value in sent:
        producer.send(read, value=value)
    producer.flush()
    producer.close()
    records = _read(kafka_bootstrap, written, COUNT)
    assert [r.value for r in records] == sent
    assert all(r.key == b"k" + r.value[-1:] for r in records)
    if not _eventually(lambda: asyncio.run(stream_count(nats_url, stream)) >= COUNT):
        raise AssertionError(f"not {COUNT} in {stream}; the bridge's log:\n{process.tail()}")
    assert asyncio.run(_stream_payloads(nats_url, stream)) == sent
    assert process.terminate() == 0
    _delete(kafka_bootstrap, [written, read], nats_url, stream)


async def _stream_payloads(nats_url: str, stream: str) -> list[bytes]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        return [(await js.get_msg(stream, seq)).data or b"" for seq in range(1, total + 1)]
    finally:
        await nc.close()


def _read(bootstrap: str, topic: str, count: int) -> list[Any]:
    """`count` records of `topic` from its start (fails after a minute without them)."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    records: list[Any] = []
    try:
        for _ in range(120):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= count:
                return records
    finally:
        consumer.close(autocommit=False)
    raise AssertionError(f"{len(records)} of {count} records in {topic}")


def _eventually(check: Any) -> bool:
    """Whether `check()` turns true within two minutes."""
    for _ in range(240):
        if check():
            return True
        time.sleep(0.5)
    return False


def _delete(bootstrap: str, topics: list[str], nats_url: str, stream: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()

    async def drop() -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(drop())
