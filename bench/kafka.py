"""Kafka: raw clients, the whole bridge and nats-kafka, both directions, in one run.

Run: ``python -m bench kafka [--runs 3]`` or ``python -m bench.kafka [--msgs N] [--size BYTES]
[--delivery at_least_once|exactly_once] [--buffer embedded,jetstream,none] [--workers 1,2]
[--no-nats-kafka]``
with the brokers of deploy/dev/services.sh up and its env exported. Prints one JSON
object and writes it to ``bench/results/kafka.json`` (with ``--runs``: every run and the medians to
``bench/results/kafka-runs.json``).

Raw legs, each the best a Python client does with the guarantee the bridge gives
(N keyed messages of SIZE bytes, 6-partition topics):

* ``kafka_produce``: confluent-kafka, acks=all + idempotence (bench/kafka_clients.py).
* ``kafka_consume``: confluent-kafka, fresh group, each batch's offsets committed.
* ``js_publish``: nats-py JetStream publishes, 1,000 PubAcks in flight.
* ``js_pull_ack``: nats-py pull consumer, batches of 1,000, an explicit ack each (acks
  are not awaited one by one: they leave in the client's flush batches).

Whole bridge (``natsbridge run`` as a child process, once per combination of ``--buffer``
and ``--workers``, each a comma-separated list; ``embedded``, the default: every message
fsync'ed into the local SQLite buffer, synchronous=FULL; ``jetstream``: an R3 stream on
the 3-node cluster; ``none``: no copy, the source acked once the sink confirmed, as
nats-kafka does; bench/common.py `Setup`), timed
from the first message at the destination until it holds all N (start-up and the group
join are not counted, as in the raw consume legs):

* ``kafka_to_jetstream``: from the topic ``kafka_produce`` filled into a JetStream stream;
  ratio against min(kafka_consume, js_publish).
* ``jetstream_to_kafka``: from a preloaded stream into a topic (key = the subject's last
  token); ratio against min(js_pull_ack, kafka_produce).

Side by side (bench/nats_kafka.py; skipped with a message when its binary is absent):
nats-kafka moves the same N messages the same way; ``nats_kafka_msgs_per_s`` and
``vs_nats_kafka`` (natsbridge's rate over nats-kafka's) are added to each bridge leg.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import kafka_clients as kc
from bench import nats_kafka
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
    run_bridge_from_first,
    setups,
    stream_count,
)

RESULT = Path(__file__).resolve().parent / "results" / "kafka.json"


def main(argv: Sequence[str]) -> int:
    """Run every leg and print the JSON result."""
    parser = argparse.ArgumentParser(prog="python -m bench kafka")
    parser.add_argument("--msgs", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delivery", default="at_least_once")
    add_setup_arguments(parser)
    parser.add_argument("--no-nats-kafka", action="store_true", help="skip the nats-kafka legs")
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    payload = os.urandom(args.size // 2 + 1).hex().encode()[: args.size]
    raw = raw_legs(args.msgs, payload, tag)
    side_by_side = not args.no_nats_kafka and nats_kafka.binary() is not None
    if not args.no_nats_kafka and not side_by_side:
        print(
            f"nats-kafka legs skipped: no binary at {nats_kafka.BINARY} "
            "(build it: python -m bench.nats_kafka build)",
            file=sys.stderr,
        )
    results = []
    for setup in setups(args):
        bench = Legs(args.msgs, payload, tag, args.delivery, setup)
        results += [
            bench.kafka_to_jetstream(raw, side_by_side),
            bench.jetstream_to_kafka(raw, side_by_side),
        ]
        side_by_side = False  # nats-kafka's legs once, beside the first setup
    report = {
        "name": "kafka",
        "msg_size": args.size,
        "msgs": args.msgs,
        "delivery": args.delivery,
        "raw_legs": {leg: round(rate) for leg, rate in raw.items()},
        "nats_kafka": str(nats_kafka.BINARY) if side_by_side else "skipped",
        "results": results,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    kc.delete_topics(f"bench-raw-{tag}")
    return 0


def raw_legs(count: int, payload: bytes, tag: str) -> dict[str, float]:
    """Messages/s of each raw client leg; leaves `bench-raw-TAG` filled with `count`."""
    topic = f"bench-raw-{tag}"
    kc.create_topic(topic)
    produced = kc.produce(topic, payload, count)
    consumed = kc.consume(topic, count, f"bench-raw-{tag}")
    stream = f"BENCH_KRAW_{tag}"
    published = asyncio.run(raw_js_publish(stream, f"benchkraw{tag}", payload, count))
    pulled = asyncio.run(raw_js_consume(stream, count))  # deletes the stream
    return {
        "kafka_produce": produced,
        "kafka_consume": consumed,
        "js_publish": published,
        "js_pull_ack": pulled,
    }


class Legs:
    """The whole-bridge legs (and nats-kafka's) of one run."""

    def __init__(self, count: int, payload: bytes, tag: str, delivery: str, setup: Setup) -> None:
        self.count = count
        self.payload = payload
        self.raw_tag = tag
        self.tag = f"{tag}-{setup.label}"
        self.delivery = delivery
        self.setup = setup

    def kafka_to_jetstream(self, raw: dict[str, float], side_by_side: bool) -> dict[str, Any]:
        count, tag = self.count, self.tag
        topic = f"bench-raw-{self.raw_tag}"  # the topic raw_legs filled
        stream = f"BENCH_K_{tag}".replace("-", "_")
        route = {
            "name": "kafka-to-js",
            "delivery": self.delivery,
            "from": {"connection": "kafka", "topics": [topic], "group_id": f"bench-bridge-{tag}"},
            "to": {
                "connection": "nats",
                "subject": f"benchk{tag}.{{{{partition}}}}",
                "jetstream": {"stream": stream},
            },
        }
        config = kc.bridge_config(f"bench-{self.tag}", route)
        rate, rss = run_bridge_from_first(config, lambda: stream_count(stream), count, self.setup)
        asyncio.run(delete_stream(stream))
        legs = {"kafka_consume": raw["kafka_consume"], "js_publish": raw["js_publish"]}
        result = bridge_result(
            "kafka_to_jetstream", len(self.payload), count, legs, rate, rss, self.setup
        )
        if side_by_side:
            result.update(_versus(rate, self._nats_kafka_to_jetstream(topic)))
        return result

    def jetstream_to_kafka(self, raw: dict[str, float], side_by_side: bool) -> dict[str, Any]:
        count, tag = self.count, self.tag
        topic, stream = f"bench-out-{tag}", f"BENCH_KOUT_{tag}".replace("-", "_")
        kc.create_topic(topic)
        asyncio.run(preloaded_stream(stream, f"benchkout{tag}", self.payload, count))
        route = {
            "name": "js-to-kafka",
            "delivery": self.delivery,
            "from": jetstream_source(stream, f"benchkout{tag}"),
            "to": {"connection": "kafka", "topic": topic, "key": "{{wildcard(1)}}"},
        }
        with kc.topic_size(topic) as size:
            config = kc.bridge_config(f"bench-{self.tag}", route)
            rate, rss = run_bridge_from_first(config, size, count, self.setup)
        asyncio.run(delete_stream(stream))
        kc.delete_topics(topic)
        legs = {"js_pull_ack": raw["js_pull_ack"], "kafka_produce": raw["kafka_produce"]}
        result = bridge_result(
            "jetstream_to_kafka", len(self.payload), count, legs, rate, rss, self.setup
        )
        if side_by_side:
            result.update(_versus(rate, self._nats_kafka_from_jetstream()))
        return result

    def _nats_kafka_to_jetstream(self, topic: str) -> float:
        stream, prefix = f"BENCH_NK_{self.tag}", f"benchnk{self.tag}"
        asyncio.run(raw_js_publish(stream, f"{prefix}.*", b"", 0))  # creates the stream
        kc.commit_group_at_start(topic, f"bench-nk-{self.tag}")
        connector = {
            "type": "KafkaToJetStream",
            "id": "bench",
            "brokers": [kc.BOOTSTRAP],
            "topic": topic,
            "groupid": f"bench-nk-{self.tag}",
            "subject": f"{prefix}.x",
        }
        rate = nats_kafka.run(connector, NATS_URL, self.count, lambda: stream_count(stream))
        asyncio.run(delete_stream(stream))
        return rate

    def _nats_kafka_from_jetstream(self) -> float:
        stream, prefix, topic = (
            f"BENCH_NKIN_{self.tag}",
            f"benchnkin{self.tag}",
            f"bench-nk-{self.tag}",
        )
        kc.create_topic(topic)
        asyncio.run(preloaded_stream(stream, prefix, self.payload, self.count))
        connector = {
            "type": "JetStreamToKafka",
            "id": "bench",
            "brokers": [kc.BOOTSTRAP],
            "topic": topic,
            "subject": f"{prefix}.*",
            "durablename": "bench",
            "keytype": "subject",
            "balancer": "hash",
        }
        with kc.topic_size(topic) as size:
            rate = nats_kafka.run(connector, NATS_URL, self.count, size)
        asyncio.run(delete_stream(stream))
        kc.delete_topics(topic)
        return rate


def _versus(bridge: float, other: float) -> dict[str, Any]:
    return {"nats_kafka_msgs_per_s": round(other), "vs_nats_kafka": round(bridge / other, 2)}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
