"""What the whole-bridge benchmarks share: raw JetStream legs, streams, the bridge runner.

`bench/rabbitmq.py`, `bench/kafka.py` and `bench/stomp.py` each stand natsbridge between
a legacy broker and JetStream; the JetStream side of their raw ceilings, the streams
they preload and count, running `natsbridge run` as a child process and the result
record (the fields DESIGN.md names) are the same for all three and live here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from natsbridge.connectors.nats.buffer import dead_letter_stream, stream_name
from tests.e2e import jetstream
from tests.e2e.bridge_process import BridgeProcess, write_config

NATS_URL = os.environ.get("NATSBRIDGE_NATS_URL", "nats://127.0.0.1:4222")
WINDOW = 1000  # concurrent JetStream publishes in the raw leg and the preload
CLUSTER_URLS = os.environ.get(
    "NATSBRIDGE_NATS_CLUSTER_URLS",
    "nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233",
).split(",")


@dataclass(frozen=True)
class Setup:
    """How the bridge under test runs: its buffer mode and its number of workers.

    `jetstream` puts every route's buffer on the 3-node cluster of services.sh as an R3
    stream (what the README recommends); `embedded` is the fsync'ed SQLite buffer; `none`
    acks the source once the sink confirmed. `workers` > 1 runs `natsbridge run --workers`.
    """

    buffer: str = "embedded"
    workers: int = 1

    @property
    def label(self) -> str:
        return f"{self.buffer}-w{self.workers}"

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """`config` with this buffer mode (and the cluster connection it needs)."""
        bridge = {**config["bridge"], "buffer": self.buffer}
        connections = dict(config["connections"])
        if self.buffer == "jetstream":
            bridge["buffer"] = {"mode": "jetstream", "connection": "buffer", "replicas": 3}
            connections["buffer"] = {"kind": "nats", "servers": CLUSTER_URLS}
        return {**config, "bridge": bridge, "connections": connections}

    def args(self) -> tuple[str, ...]:
        return ("--workers", str(self.workers)) if self.workers > 1 else ()

    def clean_up(self, config: dict[str, Any]) -> None:
        """Delete the cluster streams a jetstream buffer left: each reserves its max_bytes
        (1 GiB) on every node, and the dev nodes have 8 GiB of file store."""
        if self.buffer == "jetstream":
            asyncio.run(_delete_buffer_streams(config))


async def _delete_buffer_streams(config: dict[str, Any]) -> None:
    nc = await nats.connect(CLUSTER_URLS)
    js = nc.jetstream()
    for route in config["routes"]:
        stream = stream_name(config["bridge"]["id"], route["name"])
        for name in (stream, dead_letter_stream(stream)):
            await js.delete_stream(name)
    await nc.close()


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """`--buffer` and `--workers`, each a comma-separated list: every combination runs."""
    parser.add_argument(
        "--buffer", default="embedded", help="embedded, jetstream, none (comma-separated)"
    )
    parser.add_argument("--workers", default="1", help="workers per bridge (comma-separated)")


def setups(args: argparse.Namespace) -> list[Setup]:
    """Every (buffer, workers) combination `add_setup_arguments` asked for."""
    buffers = args.buffer.split(",")
    for buffer in buffers:
        if buffer not in ("embedded", "jetstream", "none"):
            raise SystemExit(f"--buffer {buffer!r}: one of embedded, jetstream, none")
    workers = [int(n) for n in args.workers.split(",")]
    return [Setup(buffer, n) for buffer in buffers for n in workers]


async def raw_js_publish(stream: str, subject: str, payload: bytes, count: int) -> float:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    start = time.perf_counter()
    for first in range(0, count, WINDOW):
        n = min(WINDOW, count - first)
        await asyncio.gather(*(js.publish(subject, payload) for _ in range(n)))
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed


async def raw_js_consume(stream: str, count: int) -> float:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    sub = await js.pull_subscribe("", durable="raw", stream=stream)
    received = 0
    start = time.perf_counter()
    while received < count:
        batch = await sub.fetch(min(1000, count - received), timeout=10)
        for message in batch:
            await message.ack()
        received += len(batch)
    elapsed = time.perf_counter() - start
    await js.delete_stream(stream)
    await nc.close()
    return received / elapsed


async def preload(stream: str, subject: str, payload: bytes, count: int) -> None:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    for first in range(0, count, WINDOW):
        n = min(WINDOW, count - first)
        await asyncio.gather(*(js.publish(subject, payload, stream=stream) for _ in range(n)))
    await nc.close()


def stream_count(stream: str) -> int:
    """How many messages `stream` holds on the benchmark's NATS server (0 if none)."""
    return asyncio.run(jetstream.stream_count(NATS_URL, stream))


async def delete_stream(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    await nc.jetstream().delete_stream(stream)
    await nc.close()


def run_bridge(
    config: dict[str, Any], done: Any, count: int, setup: Setup = Setup()
) -> tuple[float, float]:
    """(messages/s, peak RSS MB per replica) of a bridge moving `count` preloaded messages."""
    return run_bridge_until(config, lambda _process: done(), count, setup)


def run_bridge_until(
    config: dict[str, Any],
    done: Callable[[BridgeProcess], bool],
    count: int,
    setup: Setup = Setup(),
) -> tuple[float, float]:
    """`run_bridge` whose `done` is asked with the running bridge (its admin endpoint)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp) / "bench.yaml", setup.apply(config))
        process = BridgeProcess(path, Path(tmp) / "data", extra_args=setup.args())
        process.start()
        try:
            start = time.perf_counter()
            while not done(process):
                time.sleep(0.05)
                if time.perf_counter() - start > 600:
                    raise SystemExit(f"bridge did not move {count} messages in 600 s")
            elapsed = time.perf_counter() - start
            assert process.process is not None
            rss = replica_peak_rss_mb(process.process.pid)
        finally:
            process.terminate()
            setup.clean_up(config)
    return count / elapsed, rss


def rate_from_first(
    count: int, arrived: Callable[[], int], alive: Callable[[], bool], timeout: float = 900
) -> float:
    """Messages/s from the first arrival to the `count`-th; `arrived()` counts them so far.

    Start-up (a consumer group's join, a process's connects) is not counted, as in the raw
    consume legs, which are timed from their first record. SystemExit when `alive()` turns
    false or `timeout` passes first.
    """
    launched = time.perf_counter()
    first = 0.0
    while True:
        now_arrived = arrived()
        now = time.perf_counter()
        if now_arrived and not first:
            first = now
        if now_arrived >= count:
            return count / (now - first)
        if not alive() or now - launched > timeout:
            raise SystemExit(f"moved {now_arrived} of {count}, then stopped")
        time.sleep(0.05)


def run_bridge_from_first(
    config: dict[str, Any], arrived: Callable[[], int], count: int, setup: Setup = Setup()
) -> tuple[float, float]:
    """(messages/s from the first arrival, peak RSS MB per replica) of a bridge moving `count`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp) / "bench.yaml", setup.apply(config))
        process = BridgeProcess(path, Path(tmp) / "data", extra_args=setup.args())
        process.start(wait_ready=False)
        assert process.process is not None
        try:
            rate = rate_from_first(count, arrived, lambda: process.process.poll() is None)
            rss = replica_peak_rss_mb(process.process.pid)
        except SystemExit as exc:
            raise SystemExit(f"bridge: {exc}\n{process.tail()}") from None
        finally:
            process.terminate()
            setup.clean_up(config)
    return rate, rss


def delivered_at_least(count: int) -> Callable[[BridgeProcess], bool]:
    """A `run_bridge_until` test: the bridge's routes counted `count` delivered (confirmed)."""

    def delivered(process: BridgeProcess) -> bool:
        status, answer = process.get("/api/routes")
        return status == 200 and sum(r["counters"]["delivered"] for r in answer["routes"]) >= count

    return delivered


def bridge_result(
    name: str,
    size: int,
    count: int,
    raw: dict[str, float],
    bridge: float,
    rss: float,
    setup: Setup = Setup(),
) -> dict[str, Any]:
    ceiling = min(raw.values())
    return {
        "name": name,
        "buffer": setup.buffer,
        "workers": setup.workers,
        "msg_size": size,
        "msgs": count,
        "raw_msgs_per_s": round(ceiling),
        "raw_legs": {leg: round(rate) for leg, rate in raw.items()},
        "bridge_msgs_per_s": round(bridge),
        "ratio": round(bridge / ceiling, 3),
        "rss_mb_max": round(rss, 1),
    }


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of process `pid`, this one by default, in MB."""
    return status_mb(pid, "VmHWM")


def replica_peak_rss_mb(pid: int) -> float:
    """The largest peak RSS among the replicas: `pid` itself, or its workers when it has any."""
    return replica_mb(pid, "VmHWM")


def replica_mb(pid: int, field: str) -> float:
    """The largest `status_mb` among the replicas: `pid`, or its workers when it has any."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return max((status_mb(child, field) for child in children), default=status_mb(pid, field))


def status_mb(pid: int | str, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...) in MB; 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def preloaded_stream(stream: str, prefix: str, payload: bytes, count: int) -> None:
    """Create `stream` on `<prefix>.*` and fill it with `count` messages on `<prefix>.x`."""
    await raw_js_publish(stream, f"{prefix}.*", payload, 0)
    await preload(stream, f"{prefix}.x", payload, count)


def jetstream_source(stream: str, prefix: str) -> dict[str, Any]:
    """The `from:` of a route draining `preloaded_stream(stream, prefix, ...)`."""
    return {
        "connection": "nats",
        "subject": f"{prefix}.*",
        "jetstream": {"stream": stream, "durable": "bench"},
    }
