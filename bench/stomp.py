"""STOMP connector vs raw stomp.py, both directions, ActiveMQ Classic and RabbitMQ, one run.

Run: ``python -m bench stomp [--msgs N] [--size
BYTES] [--window W] [--brokers activemq,rabbitmq]``, with the brokers of
deploy/dev/services.sh up and its env exported. Prints one JSON object and writes it to
``bench/results/stomp.json``.

Per broker and direction, N messages of SIZE bytes (default 50,000 x 1 KiB, persistent):

* ``send``: the connector's sink (`send()` through the connector API, W = 1000 sends in
  flight, each awaiting its RECEIPT) against raw stomp.py SENDs with a receipt per message,
  W in flight (``raw_msgs_per_s``: the fair ceiling for a confirmed send). Raw stomp.py
  without receipts (the ceiling of an unconfirmed send, ending with one DISCONNECT
  receipt so that every SEND was processed) is reported as ``raw_unconfirmed_msgs_per_s``.
* ``consume``: the connector's source (`receive()` + `ack` per message, prefetch W) from a
  preloaded queue, against raw stomp.py with ``ack: client-individual``, the same
  prefetch and an ACK per message from its listener (``raw_msgs_per_s``); raw stomp.py
  with ``ack: auto`` is reported as ``raw_auto_ack_msgs_per_s``.

Each leg runs in a fresh Python process, so ``rss_mb_max`` (the bridge leg) and
``raw_rss_mb_max`` are each leg's own peak resident memory (VmHWM). ``ratio`` is
bridge / raw.
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
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg:
        rate = LEGS[args.leg](args.broker, args.queue, args.msgs, args.size, args.window)
        print(json.dumps({"rate": rate, "rss_mb": peak_rss_mb()}))
        return 0
    results = []
    for broker in args.brokers.split(","):
        results.append(send_direction(broker, args))
        results.append(consume_direction(broker, args))
    delete_rabbitmq_queues(CREATED)
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


def delete_rabbitmq_queues(names: list[str]) -> None:
    """Delete the bench's RabbitMQ queues through the management API (best effort)."""
    import base64
    import contextlib
    import urllib.parse
    import urllib.request

    base = os.environ.get("NATSBRIDGE_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
    auth = base64.b64encode(b"guest:guest").decode()
    for name in names:
        request = urllib.request.Request(
            f"{base}/api/queues/%2F/{urllib.parse.quote(name, safe='')}",
            method="DELETE",
            headers={"Authorization": f"Basic {auth}"},
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=5).close()


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


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


def _route(tmp: Path, broker: str, queue: str, window: int, direction: str) -> tuple[Any, Any, Any]:
    from bridge.config import load_config

    url, login, passcode = BROKERS[broker]
    connection = {"kind": "stomp", "url": url, "dialect": broker, "login": login}
    connection["passcode"] = passcode
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
    """The sink through the connector API: `window` sends in flight, each awaiting its receipt."""
    import tempfile

    from bridge.envelope import Envelope
    from connectors.stomp import connector

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            route, conn, bridge = _route(Path(tmp), broker, queue, window, "sink")
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        body = payload(size)
        slots = asyncio.Semaphore(window)

        async def one() -> None:
            try:
                await sink.send(Envelope(queue, body))
            finally:
                slots.release()

        start = time.perf_counter()
        tasks = []
        for _ in range(count):
            await slots.acquire()
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        await sink.close()
        return count / elapsed

    return asyncio.run(run())


def bridge_consume(broker: str, queue: str, count: int, size: int, window: int) -> float:
    """The source through the connector API: receive batches, ack every message."""
    import tempfile

    from connectors.stomp import connector

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
