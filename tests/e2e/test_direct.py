"""`buffer: none` end to end: each durable -> durable pair through a kill -9 mid-stream.

With no buffer, a message is safe only at its source until the sink confirmed it: a bridge
that acked the source any earlier loses what was in flight when it is killed. Each test
preloads the source, starts the bridge, kills it -9 once the first thousand arrived,
starts it again and requires every message at the destination, the source
settled (nothing left un-acked), and the duplicates within the README's bound. A fast
sink leaves little in flight at any instant, so one more test holds the sink down: the
bridge must settle nothing at the source. Counts stay small (20,000; 10,000 from Kafka,
where kafka-python is the slow producer; 40,000 into Kafka, which the bridge writes fast
enough to finish before a slower kill): about a minute for the file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
from kafka import KafkaConsumer, KafkaProducer

from natsbridge.bridge.broker.broker import Broker
from tests.e2e.bridge_process import BridgeProcess, free_port, write_config
from tests.e2e.rabbitmq_admin import delete_queues
from tests.e2e.test_kafka_bridge import create_topic, end_offsets, read_topic, stream_messages

MAX_IN_FLIGHT = 1000
# README "Buffer none": after a crash, what the bridge held un-acked comes again: at most
# 2 x max_in_flight, plus what the source read ahead or had not committed yet.
DUPLICATE_BOUND = 2 * MAX_IN_FLIGHT + 5000
WAIT_S = 90.0


@pytest.fixture
def tag() -> Iterator[str]:
    value = uuid.uuid4().hex[:8]
    yield value
    delete_queues(lambda name: value in name)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], BridgeProcess]]:
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any]) -> BridgeProcess:
        process = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


def config(tag: str, connections: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    """One route with `buffer: none` (bridge-wide), pipelined max_in_flight deep."""
    return {
        "version": 1,
        "bridge": {
            "id": f"direct-{tag}",
            "data_dir": "${env:NATSBRIDGE_DATA_DIR}",
            "buffer": "none",
        },
        "connections": connections,
        "routes": [{"name": "direct", "max_in_flight": MAX_IN_FLIGHT, **route}],
    }


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def through_a_kill(
    process: BridgeProcess, arrived: Callable[[], int], settled: Callable[[], bool], count: int
) -> None:
    """Start, kill -9 with a third delivered, start again, wait until the source is
    settled (it is only once the sink confirmed everything), stop cleanly."""
    process.start()
    # As early as the flow shows (a fast pair may finish within one poll: the sink-down
    # test is the one that always catches messages un-acked at the source).
    wait_for(lambda: arrived() >= min(count // 3, 1000), "the first messages before the kill")
    process.kill()
    process.start()
    wait_for(lambda: arrived() >= count and settled(), "every message, and the source settled")
    assert process.terminate() == 0, process.tail()


def assert_all_once_or_duplicated(sent: list[str], received: list[str]) -> int:
    """No message lost, none invented; returns (and prints) the duplicates."""
    counts = Counter(received)
    assert set(counts) == set(sent), f"lost {len(set(sent) - set(counts))}"
    duplicates = len(received) - len(counts)
    print(f"duplicates: {duplicates} of {len(sent)}")
    assert duplicates <= DUPLICATE_BOUND
    return duplicates


def assert_no_local_copy(data_dir: Path) -> None:
    """The route's embedded stream never held the flow (it keeps only dead letters)."""

    async def stored() -> int:
        broker = await Broker.open(data_dir)
        try:
            return (await broker.stream_info("direct")).last_seq
        finally:
            await broker.close()

    assert asyncio.run(stored()) == 0


# ---------------------------------------------------------------- the brokers


def rabbit_preload(url: str, queue: str, bodies: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    for body in bodies:
        channel.basic_publish("", queue, body.encode(), pika.BasicProperties(delivery_mode=2))
    connection.close()


def rabbit_depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def rabbit_drain(url: str, queue: str) -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    bodies: list[str] = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        bodies.append(body.decode())
    connection.close()
    return bodies


def js_run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def js_preload(url: str, stream: str, subject: str, bodies: list[str]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    for first in range(0, len(bodies), 1000):
        chunk = bodies[first : first + 1000]
        await asyncio.gather(*(js.publish(subject, body.encode()) for body in chunk))
    await nc.close()


async def js_count(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


async def js_bodies(url: str, stream: str) -> list[str]:
    return [message.data.decode() for message in await stream_messages(url, stream)]


async def js_consumer_settled(url: str, stream: str, durable: str) -> tuple[int, int]:
    """(pending, ack pending) of the bridge's durable consumer."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return int(info.num_pending), int(info.num_ack_pending)
    finally:
        await nc.close()


def js_source(tag: str, stream: str) -> dict[str, Any]:
    # A short ack_wait: what the killed bridge held comes again within a second or two.
    js = {"stream": stream, "durable": "direct", "ack_wait": "2s", "max_deliver": 100}
    return {"connection": "nats", "subject": f"in{tag}.x", "jetstream": js}


def kafka_group_lag(bootstrap: str, topic: str, group: str) -> int:
    end = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        committed = {tp: consumer.committed(tp) or 0 for tp in end}
    finally:
        consumer.close(autocommit=False)
    return sum(end[tp] - committed[tp] for tp in end)


# ---------------------------------------------------------------- the pairs


@pytest.mark.amqp
@pytest.mark.nats
def test_rabbitmq_to_jetstream(amqp_url: str, nats_url: str, tag: str, bridge: Any) -> None:
    count, queue, stream = 20_000, f"direct-in-{tag}", f"DIRECT_{tag}"
    sent = [f"r{i}" for i in range(count)]
    rabbit_preload(amqp_url, queue, sent)
    process = bridge(
        config(
            tag,
            {
                "rabbit": {"kind": "amqp", "url": amqp_url},
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
            {
                "from": {"connection": "rabbit", "queue": queue},
                "to": {
                    "connection": "nats",
                    "subject": f"out{tag}.x",
                    "jetstream": {"stream": stream},
                },
            },
        )
    )
    through_a_kill(
        process,
        lambda: js_run(js_count(nats_url, stream)),
        lambda: rabbit_depth(amqp_url, queue) == 0,
        count,
    )
    assert_all_once_or_duplicated(sent, js_run(js_bodies(nats_url, stream)))
    assert_no_local_copy(process.data_dir)


@pytest.mark.amqp
@pytest.mark.nats
def test_nothing_is_settled_at_the_source_before_the_sink_confirmed(
    amqp_url: str, nats_url: str, tag: str, bridge: Any, tmp_path: Path
) -> None:
    """A sink that never connects: the bridge reads (up to its capacity) and settles
    nothing; killed -9, the queue has every message back; with the sink, all arrive."""
    count, queue, stream = 5_000, f"direct-in-{tag}", f"DIRECT_{tag}"
    sent = [f"s{i}" for i in range(count)]
    rabbit_preload(amqp_url, queue, sent)
    route = {
        "from": {"connection": "rabbit", "queue": queue},
        "to": {"connection": "nats", "subject": f"out{tag}.x", "jetstream": {"stream": stream}},
    }
    nowhere = f"nats://127.0.0.1:{free_port()}"
    connections = {
        "rabbit": {"kind": "amqp", "url": amqp_url},
        "nats": {"kind": "nats", "servers": [nowhere]},
    }
    process = bridge(config(tag, connections, route))
    process.start(wait_ready=False)
    wait_for(lambda: received(process) >= MAX_IN_FLIGHT, "the source read while the sink is down")
    assert received(process) <= 2 * MAX_IN_FLIGHT, "held more than its capacity"
    assert process.routes()["direct"]["counters"]["acked"] == 0
    process.kill()
    wait_for(lambda: rabbit_depth(amqp_url, queue) == count, "every message back in the queue")
    connections["nats"]["servers"] = [nats_url]
    write_config(process.config, config(tag, connections, route))
    process.start()
    wait_for(lambda: rabbit_depth(amqp_url, queue) == 0, "the source settled")
    assert process.terminate() == 0, process.tail()
    assert_all_once_or_duplicated(sent, js_run(js_bodies(nats_url, stream)))
    assert_no_local_copy(process.data_dir)


def received(process: BridgeProcess) -> int:
    status, body = process.get("/api/routes")
    if status == 0 or not isinstance(body, dict):
        return 0
    return sum(route["counters"]["received"] for route in body["routes"])


@pytest.mark.amqp
@pytest.mark.nats
def test_jetstream_to_rabbitmq(amqp_url: str, nats_url: str, tag: str, bridge: Any) -> None:
    count, queue, stream = 20_000, f"direct-out-{tag}", f"DIRECT_{tag}"
    sent = [f"j{i}" for i in range(count)]
    js_run(js_preload(nats_url, stream, f"in{tag}.x", sent))
    rabbit_preload(amqp_url, queue, [])  # declared, bound by the default exchange
    process = bridge(
        config(
            tag,
            {
                "rabbit": {"kind": "amqp", "url": amqp_url},
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
            {
                "from": js_source(tag, stream),
                "to": {
                    "connection": "rabbit",
                    "exchange": "",
                    "routing_key": queue,
                    "declare": False,
                },
            },
        )
    )
    through_a_kill(
        process,
        lambda: rabbit_depth(amqp_url, queue),
        lambda: js_run(js_consumer_settled(nats_url, stream, "direct")) == (0, 0),
        count,
    )
    assert_all_once_or_duplicated(sent, rabbit_drain(amqp_url, queue))
    assert_no_local_copy(process.data_dir)


@pytest.mark.kafka
@pytest.mark.nats
def test_kafka_to_jetstream(kafka_bootstrap: str, nats_url: str, tag: str, bridge: Any) -> None:
    count, topic, stream = 10_000, f"direct-in-{tag}", f"DIRECT_{tag}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    sent = [f"k{i}" for i in range(count)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for i, body in enumerate(sent):
        producer.send(topic, value=body.encode(), key=str(i % 30).encode())
    producer.flush()
    producer.close()
    group = f"direct-{tag}"
    process = bridge(
        config(
            tag,
            {
                "kafka": {
                    "kind": "kafka",
                    "bootstrap_servers": [kafka_bootstrap],
                    # the killed member's partitions move after 6 s, not the default 45 s
                    "librdkafka": {"session.timeout.ms": 6000},
                },
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
            {
                "from": {"connection": "kafka", "topics": [topic], "group_id": group},
                "to": {
                    "connection": "nats",
                    "subject": f"out{tag}.x",
                    "jetstream": {"stream": stream},
                },
            },
        )
    )
    through_a_kill(
        process,
        lambda: js_run(js_count(nats_url, stream)),
        lambda: kafka_group_lag(kafka_bootstrap, topic, group) == 0,
        count,
    )
    assert_all_once_or_duplicated(sent, js_run(js_bodies(nats_url, stream)))
    assert_no_local_copy(process.data_dir)


@pytest.mark.kafka
@pytest.mark.nats
def test_jetstream_to_kafka(kafka_bootstrap: str, nats_url: str, tag: str, bridge: Any) -> None:
    count, topic, stream = 40_000, f"direct-out-{tag}", f"DIRECT_{tag}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    sent = [f"t{i}" for i in range(count)]
    js_run(js_preload(nats_url, stream, f"in{tag}.x", sent))
    process = bridge(
        config(
            tag,
            {
                "kafka": {
                    "kind": "kafka",
                    "bootstrap_servers": [kafka_bootstrap],
                    # the killed member's partitions move after 6 s, not the default 45 s
                    "librdkafka": {"session.timeout.ms": 6000},
                },
                "nats": {"kind": "nats", "servers": [nats_url]},
            },
            {"from": js_source(tag, stream), "to": {"connection": "kafka", "topic": topic}},
        )
    )
    through_a_kill(
        process,
        lambda: sum(end_offsets(kafka_bootstrap, topic).values()),
        lambda: js_run(js_consumer_settled(nats_url, stream, "direct")) == (0, 0),
        count,
    )
    records = read_topic(kafka_bootstrap, topic)
    assert_all_once_or_duplicated(sent, [record.value.decode() for record in records])
    assert_no_local_copy(process.data_dir)
