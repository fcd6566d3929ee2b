"""Three replicas on `buffer: jetstream` through a replica's kill -9 and a NATS node's.

Three `natsbridge run` processes with one config (one bridge id) share three routes:
RabbitMQ -> JetStream, JetStream -> RabbitMQ and Kafka -> JetStream, COUNT messages
each, every route's buffer an R3 stream on the 3-node cluster (services.sh nats-1..3).
Mid-run one replica is kill -9'ed and not restarted, then the cluster node leading a
route's buffer is kill -9'ed and started again. Nothing may be lost; the duplicates are
counted and must stay within the README's bound (Scale out).

COUNT is 100,000 (NATSBRIDGE_E2E_SCALE_COUNT sets another).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient

from tests.conftest import SERVICES_SH
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

COUNT = int(os.environ.get("NATSBRIDGE_E2E_SCALE_COUNT", "100000"))
REPLICAS = 3
MAX_IN_FLIGHT = 1000
WAIT_S = 240.0
# README, Scale out: per route, a replica's death repeats at most what it had taken from
# the buffer and read ahead from the source (max_in_flight each), a node's failure at
# most one put and one settle in flight per replica (max_in_flight each).
DUPLICATE_BOUND = 2 * MAX_IN_FLIGHT + REPLICAS * 2 * MAX_IN_FLIGHT


def config(tag: str, amqp_url: str, nats_url: str, cluster: list[str], kafka: str) -> Any:
    def route(name: str, source: dict[str, Any], sink: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"{name}-{tag}", "from": source, "to": sink, "max_in_flight": MAX_IN_FLIGHT}

    return {
        "version": 1,
        "bridge": {
            "id": f"scale-{tag}",
            "data_dir": "${env:NATSBRIDGE_DATA_DIR}",
            "replica": "${env:NATSBRIDGE_REPLICA}",
            "buffer": {"mode": "jetstream", "connection": "cluster", "ack_wait": "5s"},
        },
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
            "cluster": {"kind": "nats", "servers": cluster},
            # a dead replica's partitions move on after the session timeout (default 45s)
            "kafka": {
                "kind": "kafka",
                "bootstrap_servers": [kafka],
                "librdkafka": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
            },
        },
        "routes": [
            route(
                "rabbit-js",
                {"connection": "rabbit", "exchange": f"in-{tag}", "binding_keys": ["#"]},
                {
                    "connection": "nats",
                    "subject": f"ra{tag}.out",
                    "jetstream": {"stream": f"RA_{tag}"},
                },
            ),
            route(
                "js-rabbit",
                {
                    "connection": "nats",
                    "subject": f"jr{tag}.in",
                    "jetstream": {"stream": f"JR_{tag}", "ack_wait": "15s", "max_deliver": 100},
                },
                {"connection": "rabbit", "exchange": f"out-{tag}", "routing_key": "out"},
            ),
            route(
                "kafka-js",
                {"connection": "kafka", "topics": [f"k-{tag}"]},
                {
                    "connection": "nats",
                    "subject": f"ka{tag}.{{{{partition}}}}",
                    "jetstream": {"stream": f"KA_{tag}"},
                },
            ),
        ],
    }


def body(key: int, seq: int) -> bytes:
    return f"{key}:{seq}".encode()


def expected() -> set[bytes]:
    return {body(seq % 16, seq) for seq in range(COUNT)}


# ---------------------------------------------------------------- broker set-up


def rabbit_setup(amqp_url: str, tag: str) -> str:
    """The input exchange and a queue observing the output exchange; returns the queue."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(f"in-{tag}", "topic", durable=True)
    channel.exchange_declare(f"out-{tag}", "topic", durable=True)
    queue = f"observe.out-{tag}"
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, f"out-{tag}", "#")
    connection.close()
    return queue


def rabbit_publish(amqp_url: str, tag: str) -> None:
    """COUNT persistent messages into the input exchange, confirmed in groups."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    properties = pika.BasicProperties(delivery_mode=2)
    for seq in range(COUNT):
        channel.basic_publish(f"in-{tag}", "k", body(seq % 16, seq), properties)
    channel.confirm_delivery()  # a round trip after the last: all were received
    connection.close()


def rabbit_drain(amqp_url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    received: list[bytes] = []
    channel.basic_qos(prefetch_count=5000)
    for method, _, payload in channel.consume(queue, inactivity_timeout=3):
        if method is None:
            break
        received.append(payload)
        if len(received) % 1000 == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return received


def rabbit_depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


async def js_publish(nats_url: str, tag: str) -> None:
    """COUNT messages into the JetStream source stream, each acknowledged."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for start in range(0, COUNT, 5000):
        acks = [
            await js.publish_async(f"jr{tag}.in", body(seq % 16, seq))
            for seq in range(start, min(COUNT, start + 5000))
        ]
        await asyncio.gather(*acks)
    await nc.close()


async def js_read(nats_url: str, stream: str) -> list[bytes]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    total = (await js.stream_info(stream)).state.messages
    sub = await js.pull_subscribe("", stream=stream)
    payloads: list[bytes] = []
    while len(payloads) < total:
        try:
            batch = await sub.fetch(min(1000, total - len(payloads)), timeout=5)
        except nats.errors.TimeoutError:
            break
        for message in batch:
            payloads.append(message.data)
            await message.ack()
    await nc.close()
    return payloads


async def js_cleanup(nats_url: str, cluster: list[str], tag: str) -> None:
    for servers, prefix in ((nats_url, ""), (cluster, "natsbridge~")):
        nc = await nats.connect(servers)
        js = nc.jetstream()
        for name in await js.streams_info():
            if tag in name.config.name and name.config.name.startswith(prefix):
                await js.delete_stream(name.config.name)
        await nc.close()


def kafka_preload(bootstrap: str, tag: str) -> None:
    """COUNT keyed records over 6 partitions (key = seq % 16), all acknowledged (acks=all)."""
    topic = f"k-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.close()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    failed: list[Any] = []
    for seq in range(COUNT):
        key = seq % 16
        while True:
            try:
                producer.produce(
                    topic,
                    body(key, seq),
                    str(key).encode(),
                    on_delivery=lambda err, _msg: err and failed.append(err),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)
    assert not failed, failed[:3]


async def buffer_leader(cluster: list[str], tag: str) -> str:
    """The services.sh name of the node leading the RabbitMQ -> JetStream route's buffer."""
    nc = await nats.connect(cluster)
    try:
        info = await nc.jetstream().stream_info(f"natsbridge~scale-{tag}~rabbit-js-{tag}")
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return "nats-" + info.cluster.leader.rsplit("_", 1)[1]  # natsbridge_cluster_<n>


def kill_node(name: str) -> None:
    """kill -9 cluster node `name`, then start it again (services.sh; its data is kept)."""
    pid = int(subprocess.check_output(["bash", str(SERVICES_SH), "pid", name], text=True))
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)  # down for a moment: its streams elect leaders among the other two
    subprocess.run(["bash", str(SERVICES_SH), "start", name], check=True, capture_output=True)


# ---------------------------------------------------------------- the test


@pytest.fixture
def tag(nats_url: str, nats_cluster_urls: list[str]) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    asyncio.run(js_cleanup(nats_url, nats_cluster_urls, tag))


def test_three_replicas_lose_nothing_through_a_replica_and_a_node_kill(
    tmp_path: Path,
    amqp_url: str,
    nats_url: str,
    kafka_bootstrap: str,
    nats_cluster_urls: list[str],
    tag: str,
) -> None:
    path = write_config(
        tmp_path / "bridge.yaml",
        config(tag, amqp_url, nats_url, nats_cluster_urls, kafka_bootstrap),
    )
    observed = rabbit_setup(amqp_url, tag)
    kafka_preload(kafka_bootstrap, tag)
    replicas = [
        BridgeProcess(path, tmp_path / f"replica-{n}", env={"NATSBRIDGE_REPLICA": f"r{n}"})
        for n in range(REPLICAS)
    ]
    publishers = [
        threading.Thread(target=rabbit_publish, args=(amqp_url, tag)),
        threading.Thread(target=lambda: asyncio.run(js_publish(nats_url, tag))),
    ]
    started = time.monotonic()
    try:
        # The others join while the first holds un-acked messages of the shared JetStream
        # consumer: a joining replica must not re-create it (everything would come again).
        replicas[0].start()
        for publisher in publishers:
            publisher.start()
        for replica in replicas[1:]:
            replica.start(wait_ready=False)
        for replica in replicas[1:]:
            replica.wait_ready()

        def delivered() -> int:
            streams = (f"RA_{tag}", f"KA_{tag}")
            counts = [asyncio.run(stream_count(nats_url, s)) for s in streams]
            return sum(counts) + rabbit_depth(amqp_url, observed)

        def wait_until(total: int, what: str) -> None:
            deadline = time.monotonic() + WAIT_S
            while delivered() < total:
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.5)

        wait_until(COUNT // 2, "a sixth of the messages")
        replicas[0].kill()  # and not restarted
        wait_until(COUNT, "a third of the messages")
        kill_node(asyncio.run(buffer_leader(nats_cluster_urls, tag)))
        wait_until(3 * COUNT, "every message")
        for publisher in publishers:
            publisher.join(timeout=WAIT_S)
        for replica in replicas[1:]:
            assert replica.terminate() == 0, replica.tail()
        elapsed = time.monotonic() - started
    finally:
        for replica in replicas:
            replica.stop()
    outputs = {
        "rabbitmq -> jetstream": asyncio.run(js_read(nats_url, f"RA_{tag}")),
        "jetstream -> rabbitmq": rabbit_drain(amqp_url, observed),
        "kafka -> jetstream": asyncio.run(js_read(nats_url, f"KA_{tag}")),
    }
    want = expected()
    counted: dict[str, tuple[int, int]] = {}
    for flow, payloads in outputs.items():
        copies = Counter(payloads)
        assert set(copies) <= want, f"{flow}: unexpected payloads"
        counted[flow] = (len(want - set(copies)), len(payloads) - len(copies))
    print(f"\n{COUNT} per flow in {elapsed:.0f}s (lost, duplicates): {counted}")
    for flow, (lost, duplicates) in counted.items():
        assert lost == 0, f"{flow}: {lost} lost"
        assert duplicates <= DUPLICATE_BOUND, f"{flow}: {duplicates} duplicates"
