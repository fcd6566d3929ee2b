"""Embedded broker benchmark: the SQLite ceiling and the broker's API, in one run.

    python -m bench broker                  # defaults below
    python -m bench.broker --msgs 100000 --reopen-msgs 1000000 --repeat 3

Phases, all with 1 KiB payloads, WAL and synchronous=FULL (unless --sync says otherwise):

* raw_insert — the ceiling: one thread inserting rows shaped like the broker's
  ``messages`` table with `executemany`, 500 rows per transaction, same page size.
* publish — `await broker.publish(...)` from `--concurrency` concurrent tasks; each
  returns once its message is durable.
* publish_ids — the same with a message id on every message (the dedup window is checked
  and written), ids shaped like Kafka coordinates from 8 partitions.
* publish_many — `await broker.publish_many(...)` of 500 messages from 4 tasks.
* raw_consume — the ceiling for consumers: select 1000 rows, delete them, commit.
* consume — `fetch(batch=1000)` and `msg.ack()` for each message, then `flush()`.
* flow — `--flow-msgs` messages pass through (publishers and a consumer at once) while
  RSS is sampled: memory must stay flat.
* reopen — close and reopen a broker whose stream holds `--reopen-msgs` messages, 10,000
  of them delivered and unacked (so the consumer's pending set is rebuilt), until the
  first (re)delivery.

Throughput phases run `--repeat` times, interleaved (raw, api, raw, api …) because
this machine is shared; the best run of each is reported. Prints one JSON object and
writes it to bench/results/broker.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from natsbridge.bridge.broker import (
    Broker,
    BrokerOptions,
    ConsumerConfig,
    Outgoing,
    Retention,
    Store,
    StreamConfig,
    Synchronous,
)
from natsbridge.bridge.broker.store import PAGE_SIZE

RESULTS = Path(__file__).resolve().parent / "results" / "broker.json"
RAW_BATCH = 500
FETCH_BATCH = 1000
MANY_BATCH = 500
MANY_TASKS = 4
SUBJECT = "orders.created"
ID_PARTITIONS = 8  # publish_ids: ids like Kafka coordinates from 8 partitions
REOPEN_IN_FLIGHT = 10_000  # delivered, unacked: their pending set is rebuilt on open


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------- raw ceilings


def _raw_db(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path / "raw.db", isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (stream INTEGER, seq INTEGER, ts INTEGER, "
        "subject TEXT, msg_id TEXT, headers TEXT, payload BLOB, PRIMARY KEY (stream, seq))"
    )
    return conn


def raw_insert(path: Path, msgs: int, payload: bytes, sync: str) -> float:
    """Rows per second for batched inserts of `msgs` rows (the publish ceiling)."""
    conn = _raw_db(_fresh(path), sync)
    now = time.time_ns()
    start = time.perf_counter()
    for first in range(0, msgs, RAW_BATCH):
        rows = [
            (1, seq, now, SUBJECT, None, None, payload)
            for seq in range(first + 1, min(first + RAW_BATCH, msgs) + 1)
        ]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return msgs / elapsed


def raw_consume(path: Path, msgs: int, payload: bytes, sync: str) -> float:
    """Rows per second for select-1000 + delete + commit (the consume+ack ceiling)."""
    conn = _raw_db(_fresh(path), sync)
    now = time.time_ns()
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
        ((1, seq, now, SUBJECT, None, None, payload) for seq in range(1, msgs + 1)),
    )
    conn.execute("COMMIT")
    conn.execute(f"PRAGMA synchronous={sync}")
    last = 0
    start = time.perf_counter()
    while True:
        rows = conn.execute(
            "SELECT seq, ts, subject, msg_id, headers, payload FROM messages "
            "WHERE stream=1 AND seq>? ORDER BY seq LIMIT ?",
            (last, FETCH_BATCH),
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        conn.execute("BEGIN")
        conn.executemany(
            "DELETE FROM messages WHERE stream=1 AND seq=?", [(row[0],) for row in rows]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return msgs / elapsed


# ---------------------------------------------------------------------- through the API


async def _open(path: Path, sync: Synchronous) -> Broker:
    broker = await Broker.open(path, BrokerOptions(synchronous=sync))
    await broker.add_stream(
        StreamConfig(name="bench", retention=Retention.WORKQUEUE, dead_letter="bench.dlq")
    )
    await broker.add_consumer("bench", ConsumerConfig(name="deliver", max_ack_pending=0))
    return broker


async def _publish(
    broker: Broker, msgs: int, payload: bytes, concurrency: int, ids: bool = False
) -> float:
    per_task, extra = divmod(msgs, concurrency)
    publish = broker.publish

    async def publisher(count: int) -> None:
        for _ in range(count):
            await publish("bench", SUBJECT, payload)

    offsets = [itertools.count() for _ in range(ID_PARTITIONS)]

    async def publisher_with_ids(count: int, task: int) -> None:
        # Ids as the runtime derives them from source coordinates: topic/partition/offset.
        partition = task % ID_PARTITIONS
        for _ in range(count):
            msg_id = f"orders/{partition}/{next(offsets[partition])}"
            await publish("bench", SUBJECT, payload, msg_id=msg_id)

    if ids:
        start = time.perf_counter()
        await asyncio.gather(
            *(publisher_with_ids(per_task + (i < extra), i) for i in range(concurrency))
        )
        return msgs / (time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(publisher(per_task + (i < extra)) for i in range(concurrency)))
    return msgs / (time.perf_counter() - start)


async def _publish_many(broker: Broker, msgs: int, payload: bytes) -> float:
    batches = [
        [Outgoing(SUBJECT, payload)] * min(MANY_BATCH, msgs - first)
        for first in range(0, msgs, MANY_BATCH)
    ]

    async def publisher(mine: Sequence[list[Outgoing]]) -> None:
        for batch in mine:
            await broker.publish_many("bench", batch)

    start = time.perf_counter()
    await asyncio.gather(*(publisher(batches[i::MANY_TASKS]) for i in range(MANY_TASKS)))
    return msgs / (time.perf_counter() - start)


async def _consume(broker: Broker, msgs: int) -> float:
    got = 0
    start = time.perf_counter()
    while got < msgs:
        batch = await broker.fetch("bench", "deliver", FETCH_BATCH, timeout=5.0)
        if not batch:
            raise RuntimeError(f"consume: stream ran dry after {got} of {msgs}")
        for msg in batch:
            msg.ack()
        got += len(batch)
    await broker.flush()
    return msgs / (time.perf_counter() - start)


def api_publish(
    path: Path, msgs: int, payload: bytes, concurrency: int, sync: Synchronous
) -> tuple[float, float]:
    """(publish msg/s, consume+ack msg/s) through a fresh broker."""

    async def run() -> tuple[float, float]:
        broker = await _open(_fresh(path), sync)
        try:
            published = await _publish(broker, msgs, payload, concurrency)
            consumed = await _consume(broker, msgs)
        finally:
            await broker.close()
        return published, consumed

    return asyncio.run(run())


def api_publish_ids(
    path: Path, msgs: int, payload: bytes, concurrency: int, sync: Synchronous
) -> float:
    """publish msg/s with a message id on every message (the exactly_once path)."""

    async def run() -> float:
        broker = await _open(_fresh(path), sync)
        try:
            return await _publish(broker, msgs, payload, concurrency, ids=True)
        finally:
            await broker.close()

    return asyncio.run(run())


def api_publish_many(path: Path, msgs: int, payload: bytes, sync: Synchronous) -> float:
    """publish_many msg/s through a fresh broker."""

    async def run() -> float:
        broker = await _open(_fresh(path), sync)
        try:
            return await _publish_many(broker, msgs, payload)
        finally:
            await broker.close()

    return asyncio.run(run())


def flow(path: Path, msgs: int, payload: bytes, concurrency: int) -> dict[str, float]:
    """Pass `msgs` messages through (publish and consume at once), sampling RSS."""
    samples: list[tuple[int, float]] = []
    done = 0

    async def run() -> float:
        nonlocal done
        broker = await _open(_fresh(path), Synchronous.FULL)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples.append((done, _rss_mb()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            start = time.perf_counter()
            consumer = asyncio.create_task(_consume_counting(broker, msgs))
            await _publish(broker, msgs, payload, concurrency)
            await consumer
            return msgs / (time.perf_counter() - start)
        finally:
            stop.set()
            sampler.join()
            await broker.close()

    async def _consume_counting(broker: Broker, total: int) -> None:
        nonlocal done
        while done < total:
            batch = await broker.fetch("bench", "deliver", FETCH_BATCH, timeout=5.0)
            for msg in batch:
                msg.ack()
            done += len(batch)

    rate = asyncio.run(run())
    early = [rss for count, rss in samples if count >= msgs // 10] or [_rss_mb()]
    return {
        "flow_msgs_per_s": round(rate),
        "flow_rss_mb_at_10pct": round(early[0], 1),
        "flow_rss_mb_end": round(samples[-1][1] if samples else _rss_mb(), 1),
        "flow_rss_mb_max": round(max((rss for _, rss in samples), default=_rss_mb()), 1),
    }


def reopen(path: Path, msgs: int, payload: bytes) -> dict[str, float]:
    """Fill a stream with `msgs` messages, then time a reopen up to the first fetch."""
    _fresh(path)
    store = Store.open(path, synchronous=Synchronous.OFF)  # building is not what we time
    store.add_stream(StreamConfig(name="bench", retention=Retention.WORKQUEUE))
    store.add_consumer("bench", ConsumerConfig(name="deliver"))
    batch = [Outgoing(SUBJECT, payload)] * 5000
    for first in range(0, msgs, len(batch)):
        store.publish_many("bench", batch[: min(len(batch), msgs - first)])
        store.commit()
    in_flight = len(store.fetch("bench", "deliver", REOPEN_IN_FLIGHT).messages)
    store.close()
    db_mb = (path / "buffer.db").stat().st_size / 2**20

    async def run() -> tuple[float, float, int]:
        start = time.perf_counter()
        broker = await Broker.open(path)
        opened = time.perf_counter() - start
        first = await broker.fetch("bench", "deliver", 1, timeout=5.0)
        ready = time.perf_counter() - start
        info = await broker.stream_info("bench")
        await broker.close()
        assert first and (first[0].seq, first[0].deliveries) == (1, 2)  # a redelivery
        return opened, ready, info.messages

    opened, ready, stored = asyncio.run(run())
    return {
        "reopen_msgs": stored,
        "reopen_in_flight": in_flight,
        "reopen_db_mb": round(db_mb),
        "reopen_open_s": round(opened, 3),
        "reopen_first_fetch_s": round(ready, 3),
    }


# ---------------------------------------------------------------------- main


def _best(runs: list[float]) -> float:
    return max(runs) if runs else 0.0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__)
    parser.add_argument("--msgs", type=int, default=200_000, help="messages per throughput run")
    parser.add_argument("--msg-size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=1000, help="concurrent publishers")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per phase")
    parser.add_argument("--flow-msgs", type=int, default=1_000_000, help="0 skips the phase")
    parser.add_argument("--reopen-msgs", type=int, default=1_000_000, help="0 skips the phase")
    parser.add_argument("--sync", default="FULL", choices=[s.value for s in Synchronous])
    parser.add_argument("--dir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """Run every phase; print one JSON object and write bench/results/broker.json."""
    args = _parse(argv)
    payload = os.urandom(args.msg_size)
    sync = Synchronous(args.sync)
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-broker-"))
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    runs: dict[str, list[float]] = {
        k: []
        for k in ("raw_insert", "publish", "publish_ids", "publish_many", "raw_consume", "consume")
    }
    try:
        for i in range(args.repeat):
            runs["raw_insert"].append(raw_insert(scratch / "raw", args.msgs, payload, sync.value))
            published, consumed = api_publish(
                scratch / "api", args.msgs, payload, args.concurrency, sync
            )
            runs["publish"].append(published)
            runs["consume"].append(consumed)
            runs["publish_ids"].append(
                api_publish_ids(scratch / "ids", args.msgs, payload, args.concurrency, sync)
            )
            runs["publish_many"].append(
                api_publish_many(scratch / "many", args.msgs, payload, sync)
            )
            runs["raw_consume"].append(raw_consume(scratch / "raw", args.msgs, payload, sync.value))
            log(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items()))
        extra: dict[str, float] = {}
        if args.flow_msgs:
            extra.update(flow(scratch / "flow", args.flow_msgs, payload, args.concurrency))
            log(f"flow: {extra}")
        if args.reopen_msgs:
            extra.update(reopen(scratch / "reopen", args.reopen_msgs, payload))
            log(f"reopen: {extra}")
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    best = {k: _best(v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "name": "broker",
        "msg_size": args.msg_size,
        "msgs": args.msgs,
        "synchronous": sync.value,
        "concurrency": args.concurrency,
        "raw_msgs_per_s": round(best["raw_insert"]),
        "bridge_msgs_per_s": round(best["publish"]),
        "ratio": round(best["publish"] / best["raw_insert"], 3),
        "publish_with_ids_msgs_per_s": round(best["publish_ids"]),
        "publish_many_msgs_per_s": round(best["publish_many"]),
        "publish_many_ratio": round(best["publish_many"] / best["raw_insert"], 3),
        "raw_consume_msgs_per_s": round(best["raw_consume"]),
        "consume_ack_msgs_per_s": round(best["consume"]),
        "consume_ratio": round(best["consume"] / best["raw_consume"], 3),
        "runs": {k: [round(x) for x in v] for k, v in runs.items()},
        **extra,
        "rss_mb_max": round(_max_rss_mb(), 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(result)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
