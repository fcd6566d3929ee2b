"""STOMP <-> NATS: raw stomp.py vs the connector and vs the whole bridge, both brokers, one run.

Run: ``python -m bench stomp [--msgs N] [--size BYTES] [--window W] [--brokers
activemq,rabbitmq] [--parts connector,bridge]``, with the brokers of deploy/dev/services.sh
up and its env exported. Prints one JSON object and writes it to
``bench/results/stomp.json``.

Per broker (each a ``dialect``: ActiveMQ Classic, RabbitMQ's STOMP plugin), N messages of
SIZE bytes (default 50,000 x 1 KiB, persistent).

Whole bridge (``--parts bridge``): a `natsbridge run` child process over a generated
one-route config (at_least_once, the embedded buffer with synchronous=FULL), timed from
its readiness, against the slower of its two raw legs measured just before on the same
brokers (``raw_msgs_per_s`` = min of ``raw_legs``), as bench/rabbitmq.py does for
RabbitMQ, whose JetStream legs and bridge runner this reuses:

* ``stomp_to_jetstream-BROKER``: raw = min(stomp.py consume with ``ack:
  client-individual``, prefetch W and an ACK per message, from a preloaded queue; nats-py
  JetStream publish, 1000 acks in flight); bridge = STOMP source on a preloaded durable
  ``/queue/…`` -> JetStream sink, until the stream holds all N (``arrived``: the stream's
  count afterwards).
* ``jetstream_to_stomp-BROKER``: raw = min(nats-py JetStream pull + ack; stomp.py SEND
  with a receipt per message, W in flight); bridge = JetStream source on a preloaded
  stream -> STOMP sink, until the bridge counts all N delivered (each confirmed by its
  RECEIPT: the broker stored it; ActiveMQ here has no JMX or statistics plugin to ask).
  A raw stomp.py consumer then counts what the queue holds (``arrived``; it reads until
  the queue is idle for a few seconds, so a duplicate would show as more than N).

Connector only (``--parts connector``), the STOMP connector driven through its API in
the benchmark's own process, per direction:

* ``send``: the connector's sink (`send_batch()` through the connector API, W = 1000 sends in
  flight, each awaiting its RECEIPT) against raw stomp.py SENDs with a receipt per message,
  W in flight (``raw_msgs_per_s``: the fair ceiling for a confirmed send). Raw stomp.py
  without receipts (the ceiling of an unconfirmed send, ending with one DISCONNECT
  receipt so that every SEND was processed) is reported as ``raw_unconfirmed_msgs_per_s``.
* ``consume``: the connector's source (`receive()` + `ack` per message, prefetch W) from a
  preloaded queue, against raw stomp.py with ``ack: client-individual``, the same
  prefetch and an ACK per message from its listener (``raw_msgs_per_s``); raw stomp.py
  with ``ack: auto`` is reported as ``raw_auto_ack_msgs_per_s``.

Each connector leg runs in a fresh Python process, so ``rss_mb_max`` (the connector leg)
and ``raw_rss_mb_max`` are each leg's own peak resident memory (VmHWM); for the whole
bridge ``rss_mb_max`` is the bridge process's. ``ratio`` is bridge / raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from tests.e2e.rabbitmq_admin import delete_queues

RESULT = Path(__file__).resolve().parent / "results" / "stomp.json"
BROKERS = {
    "activemq": (
        os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ", "stomp://127.0.0.1:61614"),
        os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_USER", "admin"),
        os.environ.get("NATSBRIDGE_STOMP_ACTIVEMQ_PASSWORD", "admin"),
    ),
    "rabbitmq": (
        os.environ.get("NATSBRIDGE_STOMP_RABBITMQ", "stomp://127.0.0.1:61613"),
        "guest",
        "guest",
    ),
}
LEG_TIMEOUT_S = 600


def main(argv: Sequence[str]) -> int:
    """Run every leg and print the JSON result (or run one leg with --leg)."""
    parser = argparse.ArgumentParser(prog="python -m bench stomp")
    parser.add_argument("--msgs", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--brokers", default="activemq,rabbitmq")
    parser.add_argument("--parts", default="connector,bridge")
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg:
        rate = LEGS[args.leg](args.broker, args.queue, args.msgs, args.size, args.window)
        print(json.dumps({"rate": rate, "rss_mb": peak_rss_mb()}))
        return 0
    parts = args.parts.split(",")
    results = []
    for broker in args.brokers.split(","):
        if "connector" in parts:
            results.append(send_direction(broker, args))
            results.append(consume_direction(broker, args))
        if "bridge" in parts:
            results.append(stomp_to_jetstream(broker, args))
            results.append(jetstream_to_stomp(broker, args))
    delete_queues(CREATED.__contains__)
    report = {
        "name": "stomp",
        "msg_size": args.size,
        "msgs": args.msgs,
        "window": args.window,
        "results": results,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


CREATED: list[str] = []
"""Queues the legs filled (and drained): RabbitMQ keeps them until deleted."""


def send_direction(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    unconfirmed = leg("raw_send", broker, f"/queue/bench-raw-{tag}", args)
    raw = leg("raw_send_receipts", broker, f"/queue/bench-rawr-{tag}", args)
    bridge = leg("bridge_send", broker, f"/queue/bench-sink-{tag}", args)
    for queue in ("raw", "rawr", "sink"):
        leg("drain", broker, f"/queue/bench-{queue}-{tag}", args)
    return result(broker, "send", args, raw, bridge, raw_unconfirmed_msgs_per_s=unconfirmed)


def consume_direction(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    auto, raw, bridge = (
        f"/queue/bench-auto-{tag}",
        f"/queue/bench-ack-{tag}",
        f"/queue/bench-src-{tag}",
    )
    for queue in (auto, raw, bridge):
        leg("raw_send", broker, queue, args)  # preload
    auto_rate = leg("raw_consume_auto", broker, auto, args)
    raw_rate = leg("raw_consume", broker, raw, args)
    bridge_rate = leg("bridge_consume", broker, bridge, args)
    return result(broker, "consume", args, raw_rate, bridge_rate, raw_auto_ack_msgs_per_s=auto_rate)


def result(
    broker: str,
    direction: str,
    args: argparse.Namespace,
    raw: dict[str, float],
    bridge: dict[str, float],
    **extra: dict[str, float],
) -> dict[str, Any]:
    return {
        "name": f"stomp-{direction}-{broker}",
        "broker": broker,
        "direction": direction,
        "msg_size": args.size,
        "msgs": args.msgs,
        "raw_msgs_per_s": round(raw["rate"]),
        "bridge_msgs_per_s": round(bridge["rate"]),
        "ratio": round(bridge["rate"] / raw["rate"], 3),
        "rss_mb_max": round(bridge["rss_mb"], 1),
        "raw_rss_mb_max": round(raw["rss_mb"], 1),
        **{name: round(value["rate"]) for name, value in extra.items()},
    }


def leg(name: str, broker: str, queue: str, args: argparse.Namespace) -> dict[str, float]:
    """Run one leg in a fresh process; its {"rate", "rss_mb"}."""
    command = [sys.executable, "-m", "bench.stomp", "--leg", name, "--broker", broker]
    command += ["--queue", queue, "--msgs", str(args.msgs), "--size", str(args.size)]
    command += ["--window", str(args.window)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=LEG_TIMEOUT_S, check=False
    )
    if broker == "rabbitmq":
        CREATED.append(queue.removeprefix("/queue/"))
    if done.returncode != 0:
        raise SystemExit(f"leg {name} on {broker} failed:\n{done.stderr[-3000:]}")
    value: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{broker:9} {name:18} {value['rate']:9.0f} msg/s", file=sys.stderr)
    return value


def payload(size: int) -> bytes:
    return os.urandom(size)


# ---------------------------------------------------------------- raw stomp.py legs


def raw_connection(broker: str, listener: Any = None) -> Any:
    import stomp  # type: ignore[import-untyped]

    url, login, passcode = BROKERS[broker]
    parts = urlsplit(url)
    conn = stomp.Connection12(
        [(parts.hostname, parts.port)], vhost="/", auto_decode=False, heartbeats=(0, 0)
    )
    if listener is not None:
        conn.set_listener("bench", listener)
    conn.connect(login, passcode, wait=True)
    return conn


def raw_send(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """Unconfirmed SENDs, then one DISCONNECT receipt: every SEND was processed."""
    body = payload(size)
    conn = raw_connection(broker)
    start = time.perf_counter()
    for _ in range(count):
        conn.send(queue, body, headers={"persistent": "true"})
    conn.disconnect(receipt="bench-done")
    return count / (time.perf_counter() - start)


def raw_send_receipts(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """A receipt per SEND, `window` in flight."""
    import stomp

    slots = threading.Semaphore(window)
    done = threading.Event()
    confirmed = 0

    class Receipts(stomp.ConnectionListener):  # type: ignore[misc]
        def on_receipt(self, frame: Any) -> None:
            nonlocal confirmed
            confirmed += 1
            slots.release()
            if confirmed == count:
                done.set()

    body = payload(size)
    conn = raw_connection(broker, Receipts())
    start = time.perf_counter()
    for i in range(count):
        slots.acquire()
        conn.send(queue, body, headers={"persistent": "true", "receipt": str(i)})
    if not done.wait(LEG_TIMEOUT_S):
        raise SystemExit(f"{confirmed} of {count} receipts")
    elapsed = time.perf_counter() - start
    conn.disconnect()
    return count / elapsed


def _raw_consume(broker: str, queue: str, count: int, window: int, ack: str) -> float:
    import stomp

    done = threading.Event()
    received = 0
    conn: Any = None

    class Consumer(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            nonlocal received
            if ack != "auto":
                conn.ack(frame.headers["ack"])
            received += 1
            if received == count:
                done.set()

    conn = raw_connection(broker, Consumer())
    prefetch = {"activemq.prefetchSize": str(window + 1), "prefetch-count": str(window)}
    start = time.perf_counter()
    conn.subscribe(queue, id="bench", ack=ack, headers=prefetch)
    if not done.wait(LEG_TIMEOUT_S):
        raise SystemExit(f"received {received} of {count}")
    elapsed = time.perf_counter() - start
    conn.disconnect()
    return count / elapsed


def raw_consume(broker: str, queue: str, count: int, size: int, window: int) -> float:
    return _raw_consume(broker, queue, count, window, "client-individual")


def raw_consume_auto(broker: str, queue: str, count: int, size: int, window: int) -> float:
    return _raw_consume(broker, queue, count, window, "auto")


def drain(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """Empty a queue a leg filled (not timed)."""
    return _raw_consume(broker, queue, count, window, "auto")


# ---------------------------------------------------------------- the connector


def stomp_connection(broker: str) -> dict[str, Any]:
    """The config's `connections` entry for `broker` (its name is the dialect)."""
    url, login, passcode = BROKERS[broker]
    return {"kind": "stomp", "url": url, "dialect": broker, "login": login, "passcode": passcode}


def _route(tmp: Path, broker: str, queue: str, window: int, direction: str) -> tuple[Any, Any, Any]:
    from natsbridge.bridge.config import load_config

    connection = stomp_connection(broker)
    nats = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}
    if direction == "source":
        route = {
            "name": "bench",
            "from": {"connection": "broker", "destination": queue},
            "to": {"connection": "nats", "subject": "bench"},
        }
    else:
        route = {
            "name": "bench",
            "from": {"connection": "nats", "subject": "bench"},
            "to": {"connection": "broker", "destination": queue},
        }
    route["max_in_flight"] = window
    path = tmp / "bench.yaml"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "bridge": {"id": "bench"},
                "connections": {"broker": connection, "nats": nats},
                "routes": [route],
            }
        )
    )
    config = load_config(path)
    return config.routes[0], config.connections["broker"], config.bridge


def bridge_send(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """The sink through the connector API: batches of `window` sends, each awaiting receipts."""
    import tempfile

    from natsbridge.bridge.envelope import Envelope
    from natsbridge.connectors.stomp import connector

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            route, conn, bridge = _route(Path(tmp), broker, queue, window, "sink")
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        body = payload(size)
        start = time.perf_counter()
        for first in range(0, count, window):
            results = await sink.send_batch([Envelope(queue, body)] * min(window, count - first))
            if any(results):
                raise SystemExit(f"the sink refused a message: {next(r for r in results if r)}")
        elapsed = time.perf_counter() - start
        await sink.close()
        return count / elapsed

    return asyncio.run(run())


def bridge_consume(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """The source through the connector API: receive batches, ack every message."""
    import tempfile

    from natsbridge.connectors.stomp import connector

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            route, conn, bridge = _route(Path(tmp), broker, queue, window, "source")
        source = connector.source(route, conn, bridge)
        received = 0
        start = time.perf_counter()
        await source.connect()
        while received < count:
            batch = await source.receive(window, 10.0)
            if not batch:
                raise SystemExit(f"received {received} of {count}")
            for message in batch:
                message.ack(None)
            received += len(batch)
        elapsed = time.perf_counter() - start
        await source.close()
        return count / elapsed

    return asyncio.run(run())


# ---------------------------------------------------------------- the whole bridge


NATS_URL = os.environ.get("NATSBRIDGE_NATS_URL", "nats://127.0.0.1:4222")


def bridge_config(tag: str, broker: str, route: dict[str, Any]) -> dict[str, Any]:
    """A one-route `natsbridge run` config: `broker`'s STOMP connection and NATS."""
    return {
        "version": 1,
        "bridge": {"id": f"bench-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "broker": stomp_connection(broker),
            "nats": {"kind": "nats", "servers": [NATS_URL]},
        },
        "routes": [{**route, "delivery": "at_least_once"}],
    }


def stomp_to_jetstream(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """Preloaded durable STOMP queue -> `natsbridge run` -> JetStream, vs the raw clients."""

    tag, count = uuid.uuid4().hex[:8], args.msgs
    raw_queue, queue = f"/queue/bench-rawin-{tag}", f"/queue/bench-bridgein-{tag}"
    leg("raw_send", broker, raw_queue, args)  # preload
    consume = leg("raw_consume", broker, raw_queue, args)["rate"]
    body = payload(args.size)
    publish = asyncio.run(raw_js_publish(f"BENCH_SRAW_{tag}", f"benchsraw{tag}", body, count))
    asyncio.run(delete_stream(f"BENCH_SRAW_{tag}"))
    leg("raw_send", broker, queue, args)  # preload the bridge's queue
    stream = f"BENCH_S_{tag}"
    route = {
        "name": "stomp-to-js",
        "from": {"connection": "broker", "destination": queue},
        "to": {"connection": "nats", "subject": f"benchs{tag}.in", "jetstream": {"stream": stream}},
    }
    config = bridge_config(tag, broker, route)
    rate, rss = run_bridge(config, lambda: stream_count(stream) >= count, count)
    arrived = stream_count(stream)
    asyncio.run(delete_stream(stream))
    raw = {"stomp_py_consume_client_individual": consume, "js_publish_async": publish}
    name = f"stomp_to_jetstream-{broker}"
    return {
        **bridge_result(name, args.size, count, raw, rate, rss),
        "broker": broker,
        "arrived": arrived,
    }


def jetstream_to_stomp(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """Preloaded JetStream stream -> `natsbridge run` -> STOMP queue, vs the raw clients."""

    tag, count = uuid.uuid4().hex[:8], args.msgs
    body = payload(args.size)
    asyncio.run(raw_js_publish(f"BENCH_SRAWIN_{tag}", f"benchsrawin{tag}", body, count))
    consume = asyncio.run(raw_js_consume(f"BENCH_SRAWIN_{tag}", count))
    raw_queue = f"/queue/bench-rawout-{tag}"
    send = leg("raw_send_receipts", broker, raw_queue, args)["rate"]
    leg("drain", broker, raw_queue, args)
    stream, queue = f"BENCH_SOUT_{tag}", f"/queue/bench-bridgeout-{tag}"
    asyncio.run(preloaded_stream(stream, f"benchsout{tag}", body, count))
    route = {
        "name": "js-to-stomp",
        "from": jetstream_source(stream, f"benchsout{tag}"),
        "to": {"connection": "broker", "destination": queue},
    }

    config = bridge_config(tag, broker, route)
    rate, rss = run_bridge_until(config, delivered_at_least(count), count)
    asyncio.run(delete_stream(stream))
    if broker == "rabbitmq":
        CREATED.append(queue.removeprefix("/queue/"))
    arrived = count_queue(broker, queue, count, args.window)
    raw = {"js_pull_ack": consume, "stomp_py_send_receipts": send}
    name = f"jetstream_to_stomp-{broker}"
    return {
        **bridge_result(name, args.size, count, raw, rate, rss),
        "broker": broker,
        "arrived": arrived,
    }


def count_queue(broker: str, queue: str, expected: int, window: int, idle_s: float = 3.0) -> int:
    """How many messages `queue` holds, read (and removed) by a raw stomp.py consumer.

    Reads until the queue has been quiet for `idle_s` after `expected` arrived (so extra
    copies are counted too), or for 30 s before that.
    """
    import stomp

    received = 0
    last = time.monotonic()

    class Counter(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            nonlocal received, last
            received += 1
            last = time.monotonic()

    conn = raw_connection(broker, Counter())
    prefetch = {"activemq.prefetchSize": str(window + 1), "prefetch-count": str(window)}
    conn.subscribe(queue, id="count", ack="auto", headers=prefetch)
    deadline = time.monotonic() + LEG_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if time.monotonic() - last > (idle_s if received >= expected else 30.0):
            break
    conn.disconnect()
    print(f"{broker:9} {'count':18} {received:9} in {queue}", file=sys.stderr)
    return received


LEGS = {
    "raw_send": raw_send,
    "raw_send_receipts": raw_send_receipts,
    "raw_consume": raw_consume,
    "raw_consume_auto": raw_consume_auto,
    "drain": drain,
    "bridge_send": bridge_send,
    "bridge_consume": bridge_consume,
}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
