"""RabbitMQ <-> JetStream through the whole bridge, against the raw clients in the same run.

Run: ``python -m bench rabbitmq [--msgs N] [--size BYTES] [--buffer embedded,jetstream,none]
[--workers 1,2]`` with the brokers of deploy/dev/services.sh up and its env exported.
Prints one JSON object and writes it to ``bench/results/rabbitmq.json``.

Each direction moves N messages of SIZE bytes (default 100,000 x 1 KiB) and is compared
with the slower of its two raw legs, measured once before the bridge legs on the same
brokers. The bridge runs once per combination of ``--buffer`` and ``--workers`` (each a
comma-separated list; default: the embedded buffer, one worker; bench/common.py `Setup`):

* ``rabbitmq_to_jetstream``: raw = min(pika consume with acks of 250 messages at a time
  (``multiple=True``, as the bridge acks), nats-py JetStream publish with concurrent
  acks); bridge = `natsbridge run` (at_least_once) from a preloaded queue until the
  stream holds all N.
* ``jetstream_to_rabbitmq``: raw = min(nats-py JetStream pull+ack, pika publish with
  publisher confirms, 1000 unconfirmed at most: the route's default max_in_flight);
  bridge = from a preloaded stream until the observed queue holds all N. As for the
  JetStream publish (PubAcks) and the STOMP and Kafka benchmarks (receipts, acks=all),
  the ceiling is a raw client giving the same guarantee as the bridge: an at_least_once
  route must not settle a message before its confirm. The raw publisher and the bridge
  publish through the same topology, a durable topic exchange bound to the observed
  queue with ``#`` (topic routing costs RabbitMQ ~15-20 us more CPU per message than
  the default exchange). pika publishing without confirms, to the default exchange, is
  reported as ``raw_unconfirmed_msgs_per_s``.

``rss_mb_max`` is the bridge process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel

from bench.common import (
    NATS_URL,
    Setup,
    add_setup_arguments,
    bridge_result,
    delete_stream,
    jetstream_source,
    preloaded_stream,
    raw_js_consume,
    raw_js_publish,
    run_bridge,
    setups,
    stream_count,
)

RESULT = Path(__file__).resolve().parent / "results" / "rabbitmq.json"
MAX_IN_FLIGHT = 1000  # the routes' default max_in_flight: the raw confirmed publish's window
ACK_EVERY = 250  # the raw consumer acks this many at once (multiple=True)
AMQP_URL = os.environ.get("NATSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main(argv: Sequence[str]) -> int:
    """Run both directions and print the JSON result."""
    parser = argparse.ArgumentParser(prog="python -m bench rabbitmq")
    parser.add_argument("--msgs", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    add_setup_arguments(parser)
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    payload = os.urandom(args.size // 2).hex().encode()[: args.size]
    runs = setups(args)
    results = [
        *rabbitmq_to_jetstream(args.msgs, payload, tag, runs),
        *jetstream_to_rabbitmq(args.msgs, payload, tag, runs),
    ]
    report = {"name": "rabbitmq", "msg_size": args.size, "msgs": args.msgs, "results": results}
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


# ---------------------------------------------------------------- raw legs


def raw_pika_publish(queue: str, payload: bytes, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    start = time.perf_counter()
    for _ in range(count):
        channel.basic_publish("", queue, payload, pika.BasicProperties(delivery_mode=2))
    connection.process_data_events(0)
    elapsed = time.perf_counter() - start
    connection.close()
    return count / elapsed


def raw_pika_publish_confirmed(exchange: str, payload: bytes, count: int, window: int) -> float:
    """pika's callback API publishing to `exchange` with publisher confirms, `window`
    unconfirmed at most.

    The fair ceiling for the bridge's at_least_once publish, which must wait for the
    broker's confirm as nats-py's JetStream publish waits for its PubAck. (A confirmed
    BlockingConnection publish waits for each confirm: one round trip per message.)
    """
    unconfirmed: deque[int] = deque()
    properties = pika.BasicProperties(delivery_mode=2)
    times: list[float] = []

    def on_open(connection: SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel: Channel) -> None:
        def on_selected(_frame: Any) -> None:
            times.append(time.perf_counter())
            publish(channel)

        channel.confirm_delivery(lambda frame: on_confirm(channel, frame), on_selected)

    def publish(channel: Channel) -> None:
        while len(unconfirmed) < window and sent[0] < count:
            channel.basic_publish(exchange, "bench", payload, properties)
            sent[0] += 1
            unconfirmed.append(sent[0])

    def on_confirm(channel: Channel, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            raise SystemExit("raw pika publish: the broker nacked a message")
        while unconfirmed and unconfirmed[0] <= method.delivery_tag:
            if not method.multiple and unconfirmed[0] != method.delivery_tag:
                break
            unconfirmed.popleft()
        if sent[0] == count and not unconfirmed:
            times.append(time.perf_counter())
            channel.connection.close()
        else:
            publish(channel)

    sent = [0]
    connection = SelectConnection(pika.URLParameters(AMQP_URL), on_open_callback=on_open)
    connection.ioloop.call_later(600, connection.ioloop.stop)
    connection.add_on_close_callback(lambda *_: connection.ioloop.stop())
    connection.ioloop.start()
    if len(times) != 2:
        raise SystemExit(f"raw pika publish: {sent[0] - len(unconfirmed)} of {count} confirmed")
    return count / (times[1] - times[0])


def raw_pika_consume(queue: str, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    received = 0
    start = time.perf_counter()
    for method, _, _ in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            break
        received += 1
        if received % ACK_EVERY == 0 or received == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if received == count:
            break
    elapsed = time.perf_counter() - start
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return received / elapsed


# ---------------------------------------------------------------- through the bridge


def bridge_config(bridge_id: str, route: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": bridge_id, "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": AMQP_URL},
            "nats": {"kind": "nats", "servers": [NATS_URL]},
        },
        "routes": [route],
    }


def rabbitmq_to_jetstream(
    count: int, payload: bytes, tag: str, runs: list[Setup]
) -> list[dict[str, Any]]:
    consume = raw_pika_consume_after_publish(f"bench.raw.{tag}", payload, count)
    publish = asyncio.run(raw_js_publish(f"BENCH_RAW_{tag}", f"benchraw{tag}", payload, count))
    asyncio.run(delete_stream(f"BENCH_RAW_{tag}"))
    raw = {"pika_consume_ack": consume, "js_publish_async": publish}
    return [
        _rabbitmq_to_jetstream(count, payload, f"{tag}-{setup.label}", raw, setup) for setup in runs
    ]


def _rabbitmq_to_jetstream(
    count: int, payload: bytes, tag: str, raw: dict[str, float], setup: Setup
) -> dict[str, Any]:
    exchange, stream = f"bench-{tag}", f"BENCH_{tag}".replace("-", "_")
    route = {
        "name": "rabbit-to-js",
        "from": {"connection": "rabbit", "exchange": exchange, "binding_keys": ["#"]},
        "to": {
            "connection": "nats",
            "subject": f"bench{tag}.{{{{routing_key}}}}",
            "jetstream": {"stream": stream},
        },
    }
    config = bridge_config(f"bench-{tag}", route)
    queue = "natsbridge.rabbit-to-js"
    _declare_bridge_queue(exchange, queue)  # so the preload is routed
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for _ in range(count):
        channel.basic_publish(exchange, "k", payload, pika.BasicProperties(delivery_mode=2))
    connection.close()
    rate, rss = run_bridge(config, lambda: stream_count(stream) >= count, count, setup)
    asyncio.run(delete_stream(stream))
    _delete_queue(queue)
    return bridge_result("rabbitmq_to_jetstream", len(payload), count, raw, rate, rss, setup)


def jetstream_to_rabbitmq(
    count: int, payload: bytes, tag: str, runs: list[Setup]
) -> list[dict[str, Any]]:
    unconfirmed = raw_pika_publish(f"bench.rawpub.{tag}", payload, count)
    _delete_queue(f"bench.rawpub.{tag}")
    raw_exchange = f"bench-rawconf-{tag}"
    with topic_exchange(raw_exchange, f"bench.rawconf.{tag}"):
        publish = raw_pika_publish_confirmed(raw_exchange, payload, count, MAX_IN_FLIGHT)
    asyncio.run(raw_js_publish(f"BENCH_RAWIN_{tag}", f"benchrawin{tag}", payload, count))
    consume = asyncio.run(raw_js_consume(f"BENCH_RAWIN_{tag}", count))
    raw = {"pika_publish_confirmed": publish, "js_pull_ack": consume}
    return [
        {
            **_jetstream_to_rabbitmq(count, payload, f"{tag}-{setup.label}", raw, setup),
            "raw_unconfirmed_msgs_per_s": round(unconfirmed),
        }
        for setup in runs
    ]


def _jetstream_to_rabbitmq(
    count: int, payload: bytes, tag: str, raw: dict[str, float], setup: Setup
) -> dict[str, Any]:
    stream = f"BENCH_IN_{tag}".replace("-", "_")
    asyncio.run(preloaded_stream(stream, f"benchin{tag}", payload, count))
    exchange, observed = f"bench-out-{tag}", f"bench.observed.{tag}"
    with topic_exchange(exchange, observed) as channel:
        route = {
            "name": "js-to-rabbit",
            "from": jetstream_source(stream, f"benchin{tag}"),
            "to": {"connection": "rabbit", "exchange": exchange, "routing_key": "{{wildcard(1)}}"},
        }

        def arrived() -> bool:
            depth = channel.queue_declare(observed, passive=True).method.message_count
            return int(depth) >= count

        rate, rss = run_bridge(bridge_config(f"bench-{tag}", route), arrived, count, setup)
    asyncio.run(delete_stream(stream))
    return bridge_result("jetstream_to_rabbitmq", len(payload), count, raw, rate, rss, setup)


# ---------------------------------------------------------------- helpers


def raw_pika_consume_after_publish(queue: str, payload: bytes, count: int) -> float:
    """Preload `queue` with the raw publisher, then time the raw consumer alone."""
    raw_pika_publish(queue, payload, count)
    return raw_pika_consume(queue, count)


def _declare_bridge_queue(exchange: str, queue: str) -> None:
    """The queue the bridge will consume, bound as the bridge binds it, before preloading."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "#")
    connection.close()


@contextlib.contextmanager
def topic_exchange(exchange: str, queue: str) -> Iterator[BlockingChannel]:
    """A durable topic exchange bound to a durable `queue` with ``#``; both deleted after.

    Yields a channel of a connection of its own (to watch the queue).
    """
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "#")
    try:
        yield channel
    finally:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()


def _delete_queue(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().queue_delete(queue)
    connection.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
