"""Start-up to first message: seconds from `natsbridge run` starting to a message arriving.

Run: ``python -m bench startup [--starts 3] [--msgs 100]`` with the brokers of
deploy/dev/services.sh up and its env exported (the jetstream leg needs the cluster:
NATSBRIDGE_NATS_CLUSTER_URLS). Prints one JSON object and writes it to
``bench/results/startup.json``.

Each run starts one `natsbridge run` process (a new bridge id, so its buffer is opened for
the first time: the SQLite file created, or the buffer stream and its consumer) on a
JetStream -> JetStream route whose source stream already holds `--msgs` messages, and
times from just before the process is spawned to the first message on the destination
subject (a core NATS subscription made before). Legs: `buffer: embedded` (data dir in a
fresh temporary directory) and `buffer: jetstream` (R3 on the cluster). `python_s` is the
same machine's floor: `python -m natsbridge --version`, an interpreter loading
natsbridge and exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors

from bench.common import NATS_URL, delete_stream, jetstream_source, preloaded_stream
from tests.e2e.bridge_process import BridgeProcess, write_config

RESULT = Path(__file__).resolve().parent / "results" / "startup.json"
TIMEOUT_S = 60.0
# The buffer stream's max_bytes is reserved on every node of the cluster: keep it small.
BUFFER_MAX_BYTES = "64MiB"


def main(argv: list[str]) -> int:
    """Time `--starts` start-ups per buffer mode, report each and the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench startup")
    parser.add_argument("--starts", type=int, default=3, help="start-ups per leg")
    parser.add_argument("--msgs", type=int, default=100)
    args = parser.parse_args(argv)
    cluster = os.environ.get("NATSBRIDGE_NATS_CLUSTER_URLS", "").split(",")
    if not cluster[0]:
        print("NATSBRIDGE_NATS_CLUSTER_URLS is not set: services.sh env", file=sys.stderr)
        return 2
    legs: dict[str, list[float]] = {"embedded": [], "jetstream": []}
    for _ in range(args.starts):
        for mode in legs:
            legs[mode].append(first_message_s(mode, cluster, args.msgs))
    python = [python_s() for _ in range(args.starts)]
    report: dict[str, Any] = {
        "name": "startup",
        "msgs_preloaded": args.msgs,
        "starts": args.starts,
        "python_s": python,
        "median_python_s": round(statistics.median(python), 3),
        "results": [
            {
                "name": f"buffer {mode}",
                "first_message_s": seconds,
                "median_first_message_s": round(statistics.median(seconds), 3),
            }
            for mode, seconds in legs.items()
        ],
        "load_average": os.getloadavg(),
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def first_message_s(mode: str, cluster: list[str], msgs: int) -> float:
    """Seconds from spawning a bridge with buffer `mode` to its first delivered message."""
    tag = uuid.uuid4().hex[:8]
    source, prefix = f"BENCH_UP_IN_{tag}", f"benchupin{tag}"
    target, subject = f"BENCH_UP_OUT_{tag}", f"benchupout{tag}"
    asyncio.run(preloaded_stream(source, prefix, b"x" * 1024, msgs))
    buffer: dict[str, Any] = {"mode": mode}
    if mode == "jetstream":
        buffer |= {"connection": "cluster", "max_bytes": BUFFER_MAX_BYTES}
    config = {
        "version": 1,
        "bridge": {"id": f"bench-up-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "nats": {"kind": "nats", "servers": [NATS_URL]},
            "cluster": {"kind": "nats", "servers": cluster},
        },
        "routes": [
            {
                "name": "js-to-js",
                "from": jetstream_source(source, prefix),
                "to": {"connection": "nats", "subject": subject, "jetstream": {"stream": target}},
                "buffer": buffer,
            }
        ],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_config(Path(tmp) / "bench.yaml", config)
            process = BridgeProcess(path, Path(tmp) / "data")
            try:
                return asyncio.run(time_first(process, subject))
            finally:
                process.terminate()
    finally:
        asyncio.run(cleanup(cluster, tag, source, target))


async def time_first(process: BridgeProcess, subject: str) -> float:
    """Subscribe to `subject`, start `process`, return the seconds to the first message."""
    nc = await nats.connect(NATS_URL)
    try:
        subscription = await nc.subscribe(subject, max_msgs=1)
        await nc.flush()
        started = time.perf_counter()
        process.start(wait_ready=False)  # the child is spawned; readiness is not awaited
        try:
            await subscription.next_msg(timeout=TIMEOUT_S)
        except nats.errors.TimeoutError:
            raise SystemExit(f"no message in {TIMEOUT_S} s:\n{process.tail()}") from None
        return round(time.perf_counter() - started, 3)
    finally:
        await nc.close()


async def cleanup(cluster: list[str], tag: str, *streams: str) -> None:
    """Delete the run's source and destination streams and its buffer streams, if any."""
    for stream in streams:
        with contextlib.suppress(nats.js.errors.NotFoundError):  # a run that failed early
            await delete_stream(stream)
    nc = await nats.connect(cluster)
    js = nc.jetstream()
    for info in await js.streams_info():
        if f"bench-up-{tag}" in info.config.name:
            await js.delete_stream(info.config.name)
    await nc.close()


def python_s() -> float:
    """Seconds of `python -m natsbridge --version`: starting the interpreter and importing."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "natsbridge", "--version"], check=True, capture_output=True
    )
    return round(time.perf_counter() - started, 3)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
