"""Memory of a JetStream -> Kafka bridge moving many messages: sampled RSS, flat and bounded.

Run: ``python -m bench memory [--msgs 1000000] [--size 1024] [--limit-mb 150]
[--buffer embedded|jetstream|none] [--workers N]`` with the brokers of
deploy/dev/services.sh up and its env exported. Prints one JSON object, writes
it to ``bench/results/memory.json`` and exits 1 when the bridge's memory is not within
the goal (a benchmark, not a CI test: 1M messages take minutes).

The stream is preloaded with N messages; ``natsbridge run`` (at_least_once, the embedded
buffer unless ``--buffer`` says otherwise; ``--workers N`` runs N replicas) moves them
into a 6-partition topic while this process samples the bridge's resident memory
(VmRSS; with workers, the largest replica's) every ``--interval`` seconds until the
topic holds N. Reported:
the samples (seconds, messages in the topic, MB), the peak (VmHWM), and ``growth_mb``:
the highest RSS of the last half of the run minus the highest of its second quarter
(after start-up and the first windows filled the buffer and the client queues). Flat
means growth_mb stays under ``--growth-mb``; bounded means the peak under ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import kafka_clients as kc
from bench.common import (
    Setup,
    add_setup_arguments,
    delete_stream,
    jetstream_source,
    preloaded_stream,
    replica_mb,
    setups,
)
from tests.e2e.bridge_process import BridgeProcess, write_config

RESULT = Path(__file__).resolve().parent / "results" / "memory.json"
TIMEOUT_S = 3600


def main(argv: list[str]) -> int:
    """Preload, run the bridge, sample, report."""
    parser = argparse.ArgumentParser(prog="python -m bench memory")
    parser.add_argument("--msgs", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--limit-mb", type=float, default=150.0)
    parser.add_argument("--growth-mb", type=float, default=10.0)
    add_setup_arguments(parser)
    args = parser.parse_args(argv)
    [setup] = (
        setups(args) if len(setups(args)) == 1 else parser.error("one --buffer, one --workers")
    )
    tag = uuid.uuid4().hex[:8]
    stream, prefix, topic = f"BENCH_MEM_{tag}", f"benchmem{tag}", f"bench-mem-{tag}"
    payload = os.urandom(args.size // 2 + 1).hex().encode()[: args.size]
    kc.create_topic(topic)
    asyncio.run(preloaded_stream(stream, prefix, payload, args.msgs))
    route = {
        "name": "js-to-kafka",
        "from": jetstream_source(stream, prefix),
        "to": {"connection": "kafka", "topic": topic, "key": "{{wildcard(1)}}"},
    }
    config = setup.apply(kc.bridge_config(f"bench-mem-{tag}", route))
    try:
        samples, peak, elapsed = sample_bridge(config, setup, topic, args)
    finally:
        setup.clean_up(config)
        asyncio.run(delete_stream(stream))
        kc.delete_topics(topic)
    report = {
        **summary(args, samples, peak, elapsed),
        "buffer": setup.buffer,
        "workers": setup.workers,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["flat"] and report["bounded"] else 1


def sample_bridge(
    config: dict[str, Any], setup: Setup, topic: str, args: argparse.Namespace
) -> tuple[list[tuple[float, int, float]], float, float]:
    """(samples, peak MB, seconds) of the bridge moving `args.msgs` into `topic`."""
    samples: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp, kc.topic_size(topic) as size:
        path = write_config(Path(tmp) / "bench.yaml", config)
        process = BridgeProcess(path, Path(tmp) / "data", extra_args=setup.args())
        process.start()
        assert process.process is not None
        pid = process.process.pid
        try:
            start = time.perf_counter()
            while True:
                moved = size()
                now = time.perf_counter() - start
                samples.append((round(now, 1), moved, round(replica_mb(pid, "VmRSS"), 1)))
                if moved >= args.msgs:
                    break
                if now > TIMEOUT_S or process.process.poll() is not None:
                    raise SystemExit(f"bridge moved {moved}/{args.msgs}:\n{process.tail()}")
                time.sleep(args.interval)
            peak = replica_mb(pid, "VmHWM")
        finally:
            process.terminate()
    return samples, peak, now


def summary(
    args: argparse.Namespace, samples: list[tuple[float, int, float]], peak: float, elapsed: float
) -> dict[str, Any]:
    """The report: goal checks first, then every sample."""
    n = len(samples)
    second_quarter = [mb for _, _, mb in samples[n // 4 : max(n // 2, n // 4 + 1)]]
    last_half = [mb for _, _, mb in samples[n // 2 :]]
    growth = max(last_half) - max(second_quarter)
    return {
        "name": "memory",
        "route": "jetstream_to_kafka",
        "msgs": args.msgs,
        "msg_size": args.size,
        "msgs_per_s": round(args.msgs / elapsed),
        "rss_mb_peak": round(peak, 1),
        "rss_mb_second_quarter_max": max(second_quarter),
        "rss_mb_last_half_max": max(last_half),
        "growth_mb": round(growth, 1),
        "limit_mb": args.limit_mb,
        "bounded": peak < args.limit_mb,
        "flat": growth < args.growth_mb,
        "samples": [{"s": s, "msgs": m, "rss_mb": mb} for s, m, mb in samples],
    }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
