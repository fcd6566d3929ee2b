"""Declared resources on the real brokers: created and logged once, differences reported
(or refused under strict) and never changed, and ``run --dry-run`` creating nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pika
import pika.exceptions
import pytest
import yaml
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from natsbridge.bridge import declare
from natsbridge.bridge.config import load_config
from natsbridge.bridge.errors import PermanentError
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.bridge import Bridge
from tests.connectors.helpers import run, unique
from tests.connectors.test_kafka import topic_partitions

WAIT_S = 30.0


def write(
    tmp_path: Path, urls: dict[str, str], routes: list[dict[str, Any]], **bridge: Any
) -> Path:
    config = {
        "version": 1,
        "bridge": {"id": "declare", "data_dir": str(tmp_path / "data"), **bridge},
        "connections": {
            "nats": {"kind": "nats", "servers": [urls["nats"]]},
            "rabbit": {"kind": "amqp", "url": urls["amqp"]},
            "kafka": {"kind": "kafka", "bootstrap_servers": [urls["kafka"]]},
        },
        "routes": routes,
    }
    path = tmp_path / f"{unique('c')}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def urls(nats_url: str, amqp_url: str, kafka_bootstrap: str) -> dict[str, str]:
    return {"nats": nats_url, "amqp": amqp_url, "kafka": kafka_bootstrap}


async def stream_config(nats_url: str, name: str) -> StreamConfig | None:
    client = await nats.connect(nats_url)
    try:
        return (await client.jetstream().stream_info(name)).config
    except NotFoundError:
        return None
    finally:
        await client.close()


async def add_stream(nats_url: str, name: str, subject: str, **settings: Any) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().add_stream(StreamConfig(name=name, subjects=[subject], **settings))
    finally:
        await client.close()


async def delete_stream(nats_url: str, name: str) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().delete_stream(name)
    except NotFoundError:
        pass
    finally:
        await client.close()


def exchange_exists(amqp_url: str, name: str) -> bool:
    link = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        link.channel().exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        link.close()


def kafka_partitions(bootstrap: str, topic: str) -> int | None:
    """How many partitions `topic` has (kafka-python, not the code under test), or None."""
    return topic_partitions(bootstrap, topic)


def text(value: object) -> str:
    """An enum field of nats-py's StreamConfig, which it sometimes leaves a string."""
    return str(getattr(value, "value", value))


def test_a_created_stream_has_its_settings_and_is_logged_once(
    urls: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried: the bridge created JetStream streams (1 replica, file storage, no limits)
    without logging it, and `to.jetstream` had no keys for their settings."""
    stream = unique("DECL").replace("-", "_")
    js = {"stream": stream, "storage": "memory", "max_msgs": 50, "max_age": "1h", "discard": "new"}
    route = {
        "name": "made",
        "from": {"connection": "nats", "subject": f"{stream}.in"},
        "to": {"connection": "nats", "subject": f"{stream}.out", "jetstream": js},
    }
    config = load_config(write(tmp_path, urls, [route]))

    async def scenario() -> StreamConfig | None:
        nats_kind = load_connector("nats")
        try:
            for _ in range(2):  # a reconnect finds it: still one line
                sink = nats_kind.sink(config.routes[0], config.connections["nats"], config.bridge)
                await sink.connect()
                await sink.close()
            return await stream_config(urls["nats"], stream)
        finally:
            await delete_stream(urls["nats"], stream)

    with caplog.at_level("INFO", "natsbridge.declare"):
        created = run(scenario())
    assert created is not None
    assert text(created.storage) == "memory" and text(created.discard) == "new"
    assert (created.max_msgs, created.max_age, created.num_replicas) == (50, 3600.0, 1)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "natsbridge.declare" and stream in r.getMessage()
    ]
    assert lines == [
        f"created JetStream stream '{stream}' on connection 'nats' (replicas=1, storage=memory, "
        f"retention=limits, max_msgs=50, max_bytes=unlimited, max_age=3600, discard=new, "
        f"subjects={stream}.out)"
    ]


def test_an_existing_stream_that_differs_is_reported_never_changed(
    urls: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = unique("DIFF").replace("-", "_")
    route = {
        "name": "differs",
        "from": {"connection": "nats", "subject": f"{stream}.x", "jetstream": {"stream": stream}},
        "to": {
            "connection": "nats",
            "subject": f"{stream}.out.x",
            "jetstream": {"stream": stream + "_OUT", "max_msgs": 1000},
        },
    }
    warned = load_config(write(tmp_path, urls, [route]))
    strict = load_config(
        write(tmp_path, urls, [route], strict_declarations=True, drain_timeout="1s")
    )

    async def scenario() -> tuple[StreamConfig | None, str]:
        await add_stream(urls["nats"], stream + "_OUT", f"{stream}.out.>", max_msgs=10)
        try:
            await declare.check(warned.routes[0], "to", warned)
            with pytest.raises(PermanentError) as refused:
                await declare.check(strict.routes[0], "to", strict)
            # At run time the strict route fails (and retries), naming the setting.
            bridge = Bridge(strict)
            running = asyncio.create_task(bridge.run())
            try:
                async with asyncio.timeout(WAIT_S):
                    while not bridge.runners or not bridge.runners[0].stats.last_error:
                        await asyncio.sleep(0.05)
                assert "max_msgs ours 1000, broker's 10" in str(bridge.runners[0].stats.last_error)
                assert not bridge.runners[0].stats.sink_connected
            finally:
                bridge.stop()
                await asyncio.wait_for(running, WAIT_S)
            return await stream_config(urls["nats"], stream + "_OUT"), str(refused.value)
        finally:
            await delete_stream(urls["nats"], stream + "_OUT")
            await delete_stream(urls["nats"], stream)

    with caplog.at_level("WARNING", "natsbridge.declare"):
        after, refusal = run(scenario())
    assert after is not None and after.max_msgs == 10, "the bridge changed the stream"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "natsbridge.declare"]
    assert f"JetStream stream '{stream}_OUT'" in warning
    assert "different max_msgs: ours 1000, broker's 10" in warning
    assert "bridge.strict_declarations is true" in refusal
    assert "route 'differs' to.jetstream" in refusal


def test_kafka_sink_creates_a_missing_topic_by_default(
    urls: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried: streams were created by default while Kafka topics were not."""
    topic = unique("decl-topic")
    route = {
        "name": "kafka-made",
        "from": {"connection": "nats", "subject": "decl.in"},
        "to": {"connection": "kafka", "topic": topic, "create_topic": {"partitions": 2}},
    }
    config = load_config(write(tmp_path, urls, [route]))

    async def scenario() -> None:
        sink = load_connector("kafka").sink(
            config.routes[0], config.connections["kafka"], config.bridge
        )
        await sink.connect()
        await sink.close()

    assert kafka_partitions(urls["kafka"], topic) is None
    with caplog.at_level("INFO", "natsbridge.declare"):
        run(scenario())
    assert kafka_partitions(urls["kafka"], topic) == 2
    declared = [r for r in caplog.records if r.name == "natsbridge.declare"]
    assert [r.getMessage() for r in declared if topic in r.getMessage()] == [
        f"created Kafka topic '{topic}' on connection 'kafka' (partitions=2, replication_factor=1)"
    ]


def test_rabbitmq_declares_are_logged_and_a_different_type_is_reported(
    urls: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried: durable RabbitMQ queues were created without logging it."""
    made, typed = unique("decl-made"), unique("decl-typed")
    link = pika.BlockingConnection(pika.URLParameters(urls["amqp"]))
    link.channel().exchange_declare(typed, exchange_type="topic", durable=True, auto_delete=False)
    routes = [
        {
            "name": made,
            "from": {"connection": "rabbit", "exchange": made},
            "to": {"connection": "nats", "subject": "decl.out"},
        },
        {
            "name": typed,
            "from": {"connection": "rabbit", "exchange": typed, "exchange_type": "fanout"},
            "to": {"connection": "nats", "subject": "decl.out"},
        },
    ]
    config = load_config(write(tmp_path, urls, routes))

    async def scenario() -> None:
        source = load_connector("amqp").source(
            config.routes[0], config.connections["rabbit"], config.bridge
        )
        await source.connect()
        await source.close()
        await declare.check(config.routes[1], "from", config)

    try:
        with caplog.at_level("INFO", "natsbridge.declare"):
            run(scenario())
    finally:
        channel = link.channel()
        for name in (made, typed):
            channel.exchange_delete(name)
        channel.queue_delete(f"natsbridge.{made}")
        link.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "natsbridge.declare"]
    assert (
        f"created RabbitMQ exchange '{made}' on connection 'rabbit' (type=topic, durable=true)"
        in lines
    )
    assert (
        f"created RabbitMQ queue 'natsbridge.{made}' on connection 'rabbit' (durable=true)" in lines
    )
    [warning] = [line for line in lines if typed in line]
    assert "different type: ours fanout, broker's topic" in warning


def dry_run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", "run", "--dry-run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NATSBRIDGE_DATA_DIR": ""},
        check=False,
    )


def test_dry_run_lists_every_resource_with_its_state_and_creates_nothing(
    urls: dict[str, str], tmp_path: Path
) -> None:
    stream = unique("DRY").replace("-", "_")
    topic, exchange = unique("dry-topic"), unique("dry-ex")
    routes = [
        {
            "name": "in",
            "from": {"connection": "rabbit", "exchange": exchange},
            "to": {
                "connection": "nats",
                "subject": f"{stream}.x",
                "jetstream": {"stream": stream, "replicas": 1, "max_msgs": 1000},
            },
        },
        {
            "name": "out",
            "from": {
                "connection": "nats",
                "subject": f"{stream}.x",
                "jetstream": {"stream": stream},
            },
            "to": {"connection": "kafka", "topic": topic},
        },
    ]
    run(add_stream(urls["nats"], stream, f"{stream}.>", max_msgs=10))
    try:
        warned = dry_run(write(tmp_path, urls, routes))
        strict = dry_run(write(tmp_path, urls, routes, strict_declarations=True))
        missing = dry_run(
            write(
                tmp_path,
                urls,
                [
                    {
                        "name": "reads",
                        "from": {"connection": "kafka", "topics": [topic]},
                        "to": {"connection": "nats", "subject": "dry.x"},
                    },
                ],
            )
        )
        assert kafka_partitions(urls["kafka"], topic) is None, "the dry run created the topic"
        assert not exchange_exists(urls["amqp"], exchange), "the dry run created the exchange"
        after = run(stream_config(urls["nats"], stream))
        assert after is not None and after.max_msgs == 10
    finally:
        run(delete_stream(urls["nats"], stream))
    assert warned.returncode == 0, warned.stdout + warned.stderr
    rows = [line.split() for line in warned.stdout.splitlines()]
    assert ["in", "rabbit", "RabbitMQ", "exchange", exchange, "would", "create"] == rows[1][:7]
    assert rows[2][:7] == ["in", "rabbit", "RabbitMQ", "queue", "natsbridge.in", "would", "create"]
    assert rows[3][:6] == ["in", "nats", "JetStream", "stream", stream, "differs"]
    assert "max_msgs ours 1000, broker's 10" in warned.stdout
    assert rows[4][:6] == ["out", "nats", "JetStream", "stream", stream, "exists"]
    assert rows[5][:7] == ["out", "kafka", "Kafka", "topic", topic, "would", "create"]
    assert "partitions=1, replication_factor=1" in warned.stdout
    assert "5 resources, nothing created; no route would fail" in warned.stdout
    assert strict.returncode == 1 and "1 would stop a route" in strict.stdout
    assert missing.returncode == 1
    assert "missing" in missing.stdout and "a Kafka source never creates topics" in missing.stdout
