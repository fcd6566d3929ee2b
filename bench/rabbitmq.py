"""RabbitMQ <-> JetStream through the whole bridge, against the raw clients in the same run.

Run: ``python -m bench rabbitmq [--msgs N] [--size BYTES]`` with the brokers of
deploy/dev/services.sh up and its env exported. Prints one JSON object and writes it to
``bench/results/rabbitmq.json``.

Each direction moves N messages of SIZE bytes (default 100,000 x 1 KiB) and is compared
with the slower of its two raw legs, measured just before on the same brokers:

* ``rabbitmq_to_jetstream``: raw = min(pika consume+ack, nats-py JetStream publish with
  concurrent acks); bridge = `natsbridge run` (at_least_once, embedded buffer with
  synchronous=FULL) from a preloaded queue until the stream holds all N.
* ``jetstream_to_rabbitmq``: raw = min(nats-py JetStream pull+ack, pika publish without
  confirms: an upper bound, since a confirmed pika BlockingConnection publish is one
  round trip per message); bridge = from a preloaded stream until the observed queue holds
  all N (the bridge publishes with confirms, pipelined).

``rss_mb_max`` is the bridge process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pika

from bench.common import (
    NATS_URL,
    bridge_result,
    delete_stream,
    jetstream_source,
    preloaded_stream,
    raw_js_consume,
    raw_js_publish,
    run_bridge,
    stream_count,
)

RESULT = Path(__file__).resolve().parent / "results" / "rabbitmq.json"
AMQP_URL = os.environ.get("NATSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main(argv: Sequence[str]) -> int:
    """Run both directions and print the JSON result."""
    parser = argparse.ArgumentParser(prog="python -m bench rabbitmq")
    parser.add_argument("--msgs", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    payload = os.urandom(args.size // 2).hex().encode()[: args.size]
    results = [
        rabbitmq_to_jetstream(args.msgs, payload, tag),
        jetstream_to_rabbitmq(args.msgs, payload, tag),
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


def raw_pika_consume(queue: str, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    received = 0
    start = time.perf_counter()
    for method, _, _ in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            break
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == count:
            break
    elapsed = time.perf_counter() - start
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return received / elapsed


# ---------------------------------------------------------------- through the bridge


def bridge_config(tag: str, route: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"bench-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": AMQP_URL},
            "nats": {"kind": "nats", "servers": [NATS_URL]},
        },
        "routes": [route],
    }


def rabbitmq_to_jetstream(count: int, payload: bytes, tag: str) -> dict[str, Any]:
    consume = raw_pika_consume_after_publish(f"bench.raw.{tag}", payload, count)
    publish = asyncio.run(raw_js_publish(f"BENCH_RAW_{tag}", f"benchraw{tag}", payload, count))
    asyncio.run(delete_stream(f"BENCH_RAW_{tag}"))
    exchange, stream = f"bench-{tag}", f"BENCH_{tag}"
    route = {
        "name": "rabbit-to-js",
        "from": {"connection": "rabbit", "exchange": exchange, "binding_keys": ["#"]},
        "to": {
            "connection": "nats",
            "subject": f"bench{tag}.{{{{routing_key}}}}",
            "jetstream": {"stream": stream},
        },
    }
    config = bridge_config(tag, route)
    _declare_bridge_queue(exchange, "natsbridge.rabbit-to-js")  # so the preload is routed
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for _ in range(count):
        channel.basic_publish(exchange, "k", payload, pika.BasicProperties(delivery_mode=2))
    connection.close()
    rate, rss = run_bridge(config, lambda: stream_count(stream) >= count, count)
    asyncio.run(delete_stream(stream))
    raw = {"pika_consume_ack": consume, "js_publish_async": publish}
    return bridge_result("rabbitmq_to_jetstream", len(payload), count, raw, rate, rss)


def jetstream_to_rabbitmq(count: int, payload: bytes, tag: str) -> dict[str, Any]:
    publish = raw_pika_publish(f"bench.rawpub.{tag}", payload, count)
    _delete_queue(f"bench.rawpub.{tag}")
    asyncio.run(raw_js_publish(f"BENCH_RAWIN_{tag}", f"benchrawin{tag}", payload, count))
    consume = asyncio.run(raw_js_consume(f"BENCH_RAWIN_{tag}", count))
    stream = f"BENCH_IN_{tag}"
    asyncio.run(preloaded_stream(stream, f"benchin{tag}", payload, count))
    exchange, observed = f"bench-out-{tag}", f"bench.observed.{tag}"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(observed, durable=True)
    channel.queue_bind(observed, exchange, "#")
    route = {
        "name": "js-to-rabbit",
        "from": jetstream_source(stream, f"benchin{tag}"),
        "to": {"connection": "rabbit", "exchange": exchange, "routing_key": "{{wildcard(1)}}"},
    }

    def arrived() -> bool:
        depth = channel.queue_declare(observed, passive=True).method.message_count
        return int(depth) >= count

    rate, rss = run_bridge(bridge_config(tag, route), arrived, count)
    channel.queue_delete(observed)
    connection.close()
    asyncio.run(delete_stream(stream))
    raw = {"pika_publish_no_confirm": publish, "js_pull_ack": consume}
    return bridge_result("jetstream_to_rabbitmq", len(payload), count, raw, rate, rss)


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


def _delete_queue(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().queue_delete(queue)
    connection.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
