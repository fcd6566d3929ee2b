"""`natsbridge drain` on the real brokers: a RabbitMQ queue into JetStream and back, a
Kafka topic into JetStream.

Each run is a real `natsbridge drain … --until-empty` process; the counts are checked
with the brokers' own clients (pika, nats-py): every message moved, the source empty.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest
from kafka import KafkaProducer

from tests.e2e.bridge_process import write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

MESSAGES = 200
DRAIN_TIMEOUT_S = 120
DRAIN = (sys.executable, "-m", "natsbridge", "drain")


def drain(config: Path, source: str, sink: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRAIN, "-c", str(config), "--from", source, "--to", sink, "--until-empty"],
        capture_output=True,
        text=True,
        timeout=DRAIN_TIMEOUT_S,
        check=False,
    )


def depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def fill(amqp_url: str, queue: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        for i in range(count):
            channel.basic_publish("", queue, b"left over %d" % i)
    finally:
        connection.close()


def test_drain_a_queue_into_jetstream_and_back(
    tmp_path: Path, amqp_url: str, nats_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    queue, back, stream = f"drain-{tag}", f"drain-back-{tag}", f"DRAIN_{tag}"
    config = write_config(
        tmp_path / "bridge.yaml",
        {
            "version": 1,
            "bridge": {"id": "drainer", "data_dir": str(tmp_path / "data")},
            "connections": {
                "rabbit": {"kind": "amqp", "url": amqp_url},
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
        },
    )
    fill(amqp_url, queue, MESSAGES)
    fill(amqp_url, back, 0)

    done = drain(config, f"rabbit:{queue}", f"nats:{stream}/drained.{tag}")
    assert done.returncode == 0, done.stderr
    assert f"drained {MESSAGES} messages from rabbit:{queue}" in done.stdout
    assert depth(amqp_url, queue) == 0
    assert asyncio.run(stream_count(nats_url, stream)) == MESSAGES

    # Back to the default exchange, with the queue's name as routing key:
    done = drain(config, f"nats:{stream}/drained.{tag}", f"rabbit:/{back}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drained {MESSAGES} messages from nats:{stream}/")
    assert depth(amqp_url, back) == MESSAGES

    # The same drain again is the same route: it goes on where it stopped.
    again = drain(config, f"nats:{stream}/drained.{tag}", f"rabbit:/{back}")
    assert again.returncode == 0, again.stderr
    assert "drained 0 messages" in again.stdout and depth(amqp_url, back) == MESSAGES


def test_drain_refuses_an_unknown_connection_in_one_line(tmp_path: Path, nats_url: str) -> None:
    config = write_config(
        tmp_path / "bridge.yaml",
        {
            "version": 1,
            "bridge": {"id": "drainer", "data_dir": str(tmp_path / "data")},
            "connections": {"nats": {"kind": "nats", "servers": [nats_url]}},
        },
    )
    done = drain(config, "rabbit:orders", "nats:S/x")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "natsbridge: --from: no connection named 'rabbit' (defined: nats)"
    ]
    done = drain(config, "nats", "nats:S/x")
    assert done.returncode == 1 and "--from takes CONNECTION:ADDRESS" in done.stderr


@pytest.mark.kafka
def test_drain_a_kafka_topic_into_jetstream(
    tmp_path: Path, kafka_bootstrap: str, nats_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, stream = f"drain-{tag}", f"DRAIN_{tag}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for i in range(MESSAGES):
            producer.send(topic, key=b"k%d" % i, value=b"left over %d" % i)
        producer.flush()
    finally:
        producer.close()
    config = write_config(
        tmp_path / "bridge.yaml",
        {
            "version": 1,
            "bridge": {"id": "drainer", "data_dir": str(tmp_path / "data")},
            "connections": {
                "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
        },
    )
    done = drain(config, f"kafka:{topic}", f"nats:{stream}/drained.{tag}.{{{{partition}}}}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drained {MESSAGES} messages from kafka:{topic}")
    assert asyncio.run(stream_count(nats_url, stream)) == MESSAGES
