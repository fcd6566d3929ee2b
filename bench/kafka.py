"""Kafka: the raw clients against the connector and the whole bridge, in one run.

Run: ``python -m bench kafka`` (defaults) or ``python -m bench.kafka [--msgs N] [--size BYTES]
[--no-bridge]`` with the brokers of
deploy/dev/services.sh up and its env exported. Prints one JSON object and writes it to
``bench/results/kafka.json``.

Connector level (one process, 6-partition topic, N messages of SIZE bytes, keyed):

* ``produce``: raw = kafka-python's KafkaProducer with the sink's settings (acks=all,
  idempotent, linger 5 ms, 64 KiB batches), send N then flush; bridge = the connector's
  KafkaTopicSink, windows of 1,000 concurrent ``send()`` (as the runtime sends).
* ``consume``: raw = KafkaConsumer ``poll()`` loop (fresh group); bridge = the connector's
  KafkaTopicSource, ``receive(1000)`` and ``ack`` each message (fresh group).
* With confluent-kafka importable (``pip install confluent-kafka``; not a dependency of the
  project), its producer and consumer are measured too (``confluent_*``), to show what a
  librdkafka-based connector could reach.

Whole bridge (``natsbridge run`` as a child process, embedded buffer, synchronous=FULL):

* ``kafka_to_jetstream``: raw = min(kafka-python consume, nats-py JetStream publish with
  concurrent acks); bridge = from a preloaded topic until the stream holds N.
* ``jetstream_to_kafka``: raw = min(nats-py JetStream pull+ack, kafka-python produce);
  bridge = from a preloaded stream until the topic holds N. The same route with a core
  NATS subject as its sink is reported as ``bridge_to_core_nats_msgs_per_s``: the bridge
  on this route when its client costs next to nothing, which bounds what a faster Kafka
  client (confluent-kafka) could give it.

``crc32c`` says whether kafka-python found the crc32c C extension: without it kafka-python
checksums every batch in pure Python, which is most of its cost. ``rss_mb_max`` is the
peak resident memory (VmHWM) of this process during the phase (connector level) or of the
bridge process (whole bridge).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from bench.common import (
    bridge_result,
    delete_stream,
    delivered_at_least,
    jetstream_source,
    peak_rss_mb,
    preloaded_stream,
    raw_js_consume,
    raw_js_publish,
    run_bridge,
    run_bridge_until,
    stream_count,
)
from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.connectors.kafka.client import HAVE_C_CRC32C
from natsbridge.connectors.kafka.config import KafkaConnection
from natsbridge.connectors.kafka.sink import BATCH_SIZE, LINGER_MS, KafkaTopicSink
from natsbridge.connectors.kafka.source import KafkaTopicSource

RESULT = Path(__file__).resolve().parent / "results" / "kafka.json"
BOOTSTRAP = os.environ.get("NATSBRIDGE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
NATS_URL = os.environ.get("NATSBRIDGE_NATS_URL", "nats://127.0.0.1:4222")
PARTITIONS = 6
WINDOW = 1000
KEYS = 1000


def main(argv: Sequence[str]) -> int:
    """Run every phase and print the JSON result."""
    parser = argparse.ArgumentParser(prog="python -m bench kafka")
    parser.add_argument("--msgs", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-bridge", action="store_true", help="connector level only")
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    payload = os.urandom(args.size // 2).hex().encode()[: args.size]
    results = [produce(args.msgs, payload, tag), consume(args.msgs, payload, tag)]
    if not args.no_bridge:
        results += [
            kafka_to_jetstream(args.msgs, payload, tag),
            jetstream_to_kafka(args.msgs, payload, tag),
        ]
    report = {
        "name": "kafka",
        "msg_size": args.size,
        "msgs": args.msgs,
        "crc32c": "c" if HAVE_C_CRC32C else "python",
        "results": results,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


# ---------------------------------------------------------------- connector level


def produce(count: int, payload: bytes, tag: str) -> dict[str, Any]:
    raw_topic, topic = f"bench-raw-{tag}", f"bench-sink-{tag}"
    for name in (raw_topic, topic):
        create_topic(name)
    _reset_peak()
    raw = raw_produce(raw_topic, payload, count)
    extra = {}
    confluent = confluent_produce(f"bench-ck-{tag}", payload, count)
    if confluent is not None:
        extra["confluent_produce"] = round(confluent)
    _reset_peak()
    bridge = asyncio.run(sink_produce(topic, payload, count, tag))
    return leg_result("produce", len(payload), count, {"kafka_python_produce": raw}, bridge, extra)


def consume(count: int, payload: bytes, tag: str) -> dict[str, Any]:
    topic = f"bench-raw-{tag}"  # filled by produce()
    _reset_peak()
    raw = raw_consume(topic, count, f"bench-raw-{tag}")
    extra = {}
    confluent = confluent_consume(topic, count, f"bench-ck-{tag}")
    if confluent is not None:
        extra["confluent_consume"] = round(confluent)
    _reset_peak()
    bridge = asyncio.run(source_consume(topic, count, tag))
    return leg_result("consume", len(payload), count, {"kafka_python_consume": raw}, bridge, extra)


def raw_produce(topic: str, payload: bytes, count: int) -> float:
    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        batch_size=BATCH_SIZE,
    )
    keys = [f"key-{i}".encode() for i in range(KEYS)]
    start = time.perf_counter()
    for i in range(count):
        producer.send(topic, value=payload, key=keys[i % KEYS])
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return count / elapsed


def raw_consume(topic: str, count: int, group: str) -> float:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        check_crcs=HAVE_C_CRC32C,  # as the connector does
    )
    received = 0
    start = 0.0
    while received < count:
        batch = consumer.poll(timeout_ms=1000, max_records=1000)
        if batch and not start:
            start = time.perf_counter()  # from the first record: the group join is not counted
        received += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - start
    consumer.close(autocommit=False)
    return count / elapsed


async def sink_produce(topic: str, payload: bytes, count: int, tag: str) -> float:
    route, connection = _route(tag, {"connection": "nats", "subject": "in.*"}, {"topic": topic})
    sink = KafkaTopicSink(route, connection, "kafka")
    await sink.connect()
    keys = [f"key-{i}".encode() for i in range(KEYS)]
    start = time.perf_counter()
    for first in range(0, count, WINDOW):
        window = range(first, min(first + WINDOW, count))
        results = await sink.send_batch(
            [Envelope(subject=topic, payload=payload, key=keys[i % KEYS]) for i in window]
        )
        if any(results):
            raise SystemExit(f"the sink refused a message: {next(r for r in results if r)}")
    elapsed = time.perf_counter() - start
    await sink.close()
    return count / elapsed


async def source_consume(topic: str, count: int, tag: str) -> float:
    route, connection = _route(
        tag,
        {"connection": "kafka", "topics": [topic], "group_id": f"bench-src-{tag}"},
        None,
    )
    source = KafkaTopicSource(route, connection, "kafka")
    await source.connect()
    received = 0
    start = 0.0
    while received < count:
        batch = await source.receive(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        for message in batch:
            message.ack(None)
        received += len(batch)
    elapsed = time.perf_counter() - start
    await source.close()
    return count / elapsed


def confluent_produce(topic: str, payload: bytes, count: int) -> float | None:
    try:
        import confluent_kafka  # type: ignore[import-not-found]
    except ImportError:
        return None
    create_topic(topic)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": LINGER_MS,
        }
    )
    keys = [f"key-{i}".encode() for i in range(KEYS)]
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, keys[i % KEYS])
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()
    return count / (time.perf_counter() - start)


def confluent_consume(topic: str, count: int, group: str) -> float | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received = 0
    start = 0.0
    while received < count:
        batch = consumer.consume(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        received += sum(1 for message in batch if message.error() is None)
    elapsed = time.perf_counter() - start
    consumer.close()
    return count / elapsed


# ---------------------------------------------------------------- whole bridge


def kafka_to_jetstream(count: int, payload: bytes, tag: str) -> dict[str, Any]:

    js_raw = asyncio.run(raw_js_publish(f"BENCH_KRAW_{tag}", f"benchkraw{tag}", payload, count))
    asyncio.run(delete_stream(f"BENCH_KRAW_{tag}"))
    topic, stream = f"bench-raw-{tag}", f"BENCH_K_{tag}"  # the topic produce() filled
    raw = raw_consume(topic, count, f"bench-raw2-{tag}")
    route = {
        "name": "kafka-to-js",
        "from": {"connection": "kafka", "topics": [topic], "group_id": f"bench-bridge-{tag}"},
        "to": {
            "connection": "nats",
            "subject": f"benchk{tag}.{{{{partition}}}}",
            "jetstream": {"stream": stream},
        },
    }
    rate, rss = run_bridge(_bridge_config(tag, route), lambda: stream_count(stream) >= count, count)
    asyncio.run(delete_stream(stream))
    legs = {"kafka_python_consume": raw, "js_publish_async": js_raw}
    return leg_result("kafka_to_jetstream", len(payload), count, legs, rate, {}, rss)


def jetstream_to_kafka(count: int, payload: bytes, tag: str) -> dict[str, Any]:

    asyncio.run(raw_js_publish(f"BENCH_KIN_{tag}", f"benchkin{tag}", payload, count))
    js_raw = asyncio.run(raw_js_consume(f"BENCH_KIN_{tag}", count))
    raw_topic, topic = f"bench-raw3-{tag}", f"bench-out-{tag}"
    create_topic(raw_topic)
    raw = raw_produce(raw_topic, payload, count)
    create_topic(topic)
    stream = f"BENCH_KOUT_{tag}"
    asyncio.run(preloaded_stream(stream, f"benchkout{tag}", payload, count))
    route = {
        "name": "js-to-kafka",
        "from": jetstream_source(stream, f"benchkout{tag}"),
        "to": {"connection": "kafka", "topic": topic, "key": "{{wildcard(1)}}"},
    }
    with topic_size(topic) as size:
        rate, rss = run_bridge(_bridge_config(tag, route), lambda: size() >= count, count)
    asyncio.run(delete_stream(stream))
    legs = {"js_pull_ack": js_raw, "kafka_python_produce": raw}
    without_kafka = jetstream_to_core_nats(count, payload, tag)
    extra = {"bridge_to_core_nats_msgs_per_s": round(without_kafka)}
    return leg_result("jetstream_to_kafka", len(payload), count, legs, rate, extra, rss)


def jetstream_to_core_nats(count: int, payload: bytes, tag: str) -> float:
    """The same route with a core NATS subject as its sink: the bridge without kafka-python.

    A core NATS publish costs the bridge a few microseconds, so this rate is about what
    the bridge reaches on this route when its Kafka client costs next to nothing.
    """
    stream = f"BENCH_KNULL_{tag}"
    asyncio.run(preloaded_stream(stream, f"benchknull{tag}", payload, count))
    route = {
        "name": "js-to-core-nats",
        "from": jetstream_source(stream, f"benchknull{tag}"),
        "to": {"connection": "nats", "subject": f"benchknullout{tag}.{{{{wildcard(1)}}}}"},
    }
    rate, _ = run_bridge_until(_bridge_config(tag, route), delivered_at_least(count), count)
    asyncio.run(delete_stream(stream))
    return rate


# ---------------------------------------------------------------- helpers


def _bridge_config(tag: str, route: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"bench-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [BOOTSTRAP]},
            "nats": {"kind": "nats", "servers": [NATS_URL]},
        },
        "routes": [route],
    }


def _route(tag: str, source: dict[str, Any], sink: dict[str, Any] | None) -> tuple[Any, Any]:
    """A loaded one-route config: kafka on the side the benchmark drives."""
    to = {"connection": "kafka", **sink} if sink else {"connection": "nats", "subject": "x"}
    config = _bridge_config(tag, {"name": f"bench-{tag}", "from": source, "to": to})
    config["bridge"]["data_dir"] = tempfile.gettempdir()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(json.dumps(config))
        loaded = load_config(path)
    connection = loaded.connections["kafka"]
    assert isinstance(connection, KafkaConnection)
    return loaded.routes[0], connection


def create_topic(topic: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        spec = {"num_partitions": partitions, "replication_factor": 1}
        admin.create_topics({topic: spec}, wait_for_metadata=True)
    finally:
        admin.close()


@contextlib.contextmanager
def topic_size(topic: str) -> Iterator[Callable[[], int]]:
    """A function counting the records of `topic` (its partitions' end offsets).

    One consumer for all the polls: a fresh one every 50 ms cost this process 13% of a
    core, taken from the bridge being measured.
    """
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        where = [TopicPartition(topic, p) for p in partitions]
        yield lambda: int(sum(consumer.end_offsets(where).values()))
    finally:
        consumer.close()


def _reset_peak() -> None:
    """Restart this process's peak RSS (VmHWM) from its current RSS."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def leg_result(
    name: str,
    size: int,
    count: int,
    raw: dict[str, float],
    bridge: float,
    extra: dict[str, Any],
    rss: float | None = None,
) -> dict[str, Any]:
    """bridge_result plus this benchmark's `extra` fields; RSS of this process by default."""
    rss_mb = peak_rss_mb() if rss is None else rss
    return {**bridge_result(name, size, count, raw, bridge, rss_mb), **extra}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
