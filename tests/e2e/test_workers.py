"""`natsbridge run --workers 3` with the embedded buffer, end to end on the real brokers.

The three workers are competing consumers of the route's RabbitMQ queue, each with its
own buffer in `<data_dir>/worker-I`. The JetStream stream the route writes to does not
exist yet (`create: false`), so everything the workers take waits in their buffers; one
worker is then kill -9'ed, the supervisor restarts it, and it must find its own buffer
again. Once the stream exists, every message must arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pika
import pytest

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count
from tests.e2e.rabbitmq_admin import delete_queues
from tests.e2e.test_kafka_bridge import create_topic, produce
from tests.e2e.test_rabbitmq_bridge import Rabbit, stream_messages, wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]

WORKERS = 3
COUNT = 20_000


@pytest.fixture
def tag() -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    delete_queues(lambda name: tag in name)


def workers_config(tag: str, amqp_url: str, nats_url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"workers-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"orders-{tag}",
                "from": {
                    "connection": "rabbit",
                    "exchange": f"orders-{tag}",
                    "binding_keys": ["#"],
                },
                "to": {
                    "connection": "nats",
                    "subject": f"workers{tag}.{{{{routing_key}}}}",
                    "jetstream": {"stream": f"WORKERS_{tag}", "create": False},
                },
                "retry": {"max": "1s"},
            }
        ],
    }


def worker_pids(supervisor: int) -> dict[int, int]:
    """Worker index -> pid, read from the supervisor's children's command lines."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    pids = {}
    for pid in children:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--worker" in argv:  # not a zombie (a killed worker not yet reaped)
            index = argv.index(b"--worker")
            pids[int(argv[index + 1].split(b"/")[0])] = int(pid)
    return pids


def route_of(bridge: BridgeProcess, port: int) -> dict[str, Any] | None:
    """The one route as worker on `port` reports it; None while it does not answer."""
    bridge.port, base = port, bridge.port
    try:
        status, body = bridge.get("/api/routes")
    finally:
        bridge.port = base
    return body["routes"][0] if status == 200 else None


def test_three_workers_share_a_queue_and_a_killed_worker_takes_up_its_buffer(
    amqp_url: str, nats_url: str, tag: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "workers.yaml", workers_config(tag, amqp_url, nats_url))
    data_dir = tmp_path / "data"
    bridge = BridgeProcess(config, data_dir, extra_args=("--workers", str(WORKERS)))
    ports = [bridge.port + i for i in range(WORKERS)]
    try:
        bridge.start(wait_ready=False)  # not ready: the sink's stream is missing
        wait_for(lambda: all(route_of(bridge, port) for port in ports), what="all workers up")
        assert bridge.process is not None
        rabbit = Rabbit(amqp_url)
        sent = [f"{tag}-{i}" for i in range(COUNT)]
        channel = rabbit.connection.channel()
        for uid in sent:
            channel.basic_publish(
                f"orders-{tag}", "eu", uid.encode(), pika.BasicProperties(delivery_mode=2)
            )
        channel.close()
        rabbit.close()

        def buffered() -> list[int]:
            routes = [route_of(bridge, port) for port in ports]
            return [route["buffer"]["depth"] if route else -1 for route in routes]

        wait_for(lambda: sum(buffered()) == COUNT, what=f"{COUNT} buffered: {buffered()}")
        depths = buffered()
        assert all(depth > 0 for depth in depths), f"the workers did not share: {depths}"
        for index in range(1, WORKERS + 1):
            assert (data_dir / f"worker-{index}" / "buffer.db").exists()

        victim = depths.index(max(depths)) + 1
        supervisor = bridge.process.pid
        old_pid = worker_pids(supervisor)[victim]
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: worker_pids(supervisor).get(victim, old_pid) != old_pid,
            what=f"worker {victim} restarted",
        )
        wait_for(
            lambda: buffered()[victim - 1] == depths[victim - 1],
            what=f"worker {victim} with its buffer of {depths[victim - 1]}: {buffered()}",
        )

        asyncio.run(create_stream(nats_url, f"WORKERS_{tag}", f"workers{tag}.>"))
        wait_for(lambda: sum(buffered()) == 0, timeout=120, what=f"delivered: {buffered()}")
        stored = asyncio.run(stream_messages(nats_url, f"WORKERS_{tag}", timeout=60))
        arrived = Counter(message.data.decode() for message in stored)
        assert set(arrived) == set(sent), f"{len(set(sent) - set(arrived))} lost"
        assert max(arrived.values()) == 1, "duplicates without any delivery in flight"

        worker_pids_at_end = list(worker_pids(supervisor).values())
        assert bridge.terminate(timeout=60) == 0, bridge.tail()
        assert "all 3 workers stopped" in bridge.tail()
        assert not any(Path(f"/proc/{pid}").exists() for pid in worker_pids_at_end)
    finally:
        bridge.stop()


async def create_stream(nats_url: str, name: str, subjects: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=[subjects])
    finally:
        await nc.close()


# ---------------------------------------------------------------- Kafka: order per partition


def assignments(bridge: BridgeProcess) -> dict[int, set[str]]:
    """Worker -> the partitions it holds, from its `assigned` / `revoked` / `lost` lines."""
    held: dict[int, set[str]] = {}
    for line in bridge.log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        words = record["msg"].split()
        if "worker" not in record or words[:2] != ["kafka", "source"] or len(words) < 5:
            continue
        mine = held.setdefault(record["worker"], set())
        parts = {p.strip(",") for p in words[4:] if "[" in p}
        if words[3] == "assigned":
            mine |= parts
        elif words[3] in ("revoked", "lost"):
            mine -= parts
    return held


@pytest.mark.kafka
def test_three_workers_share_a_consumer_group_and_keep_each_partitions_order(
    kafka_bootstrap: str, nats_url: str, tag: str, tmp_path: Path
) -> None:
    topic, partitions, count = f"workers-{tag}", 6, 6000
    create_topic(kafka_bootstrap, topic, partitions)
    config = {
        "version": 1,
        "bridge": {"id": f"workers-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"k-{tag}",
                "from": {"connection": "kafka", "topics": [topic]},
                "to": {
                    "connection": "nats",
                    "subject": f"kw{tag}.{{{{partition}}}}",
                    "jetstream": {"stream": f"KW_{tag}"},
                },
            }
        ],
    }
    path = write_config(tmp_path / "kafka.yaml", config)
    bridge = BridgeProcess(path, tmp_path / "data", extra_args=("--workers", str(WORKERS)))
    every = {f"{topic}[{p}]" for p in range(partitions)}
    try:
        bridge.start()

        def stable() -> bool:  # each worker holds partitions, together all of them
            held = assignments(bridge)
            return (
                len(held) == WORKERS and all(held.values()) and set().union(*held.values()) == every
            )

        wait_for(stable, what=f"partitions spread over {WORKERS} workers: {assignments(bridge)}")
        records = [(b"k%d" % (i % 24), b"k%d:%d" % (i % 24, i), []) for i in range(count)]
        produce(kafka_bootstrap, topic, records)  # type: ignore[arg-type]
        wait_for(
            lambda: asyncio.run(stream_count(nats_url, f"KW_{tag}")) >= count,
            what=f"{count} in the stream",
        )
        held = assignments(bridge)
        stored = asyncio.run(stream_messages(nats_url, f"KW_{tag}", timeout=60))
        assert held == assignments(bridge) and stable(), "a rebalance during the run"
        last: dict[str, int] = {}
        for message in stored:  # stream order
            partition = message.headers["Kafka-Partition"]
            offset = int(message.headers["Kafka-Offset"])
            assert offset > last.get(partition, -1), f"partition {partition} out of order"
            last[partition] = offset
        assert {m.data for m in stored} == {value for _, value, _ in records}
        assert bridge.terminate(timeout=60) == 0, bridge.tail()
    finally:
        bridge.stop()
