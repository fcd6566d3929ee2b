"""kill -9 at random points, many times, then prove nothing durable was lost or repeated.

The child (tests/broker/crash_child.py) publishes with message ids, consumes, acks,
naks and terms, logging intents and confirmations. After the last kill the test
resolves the publishes still in doubt the way a source would (publishing them again
with the same id), reads what the store holds and drains the consumer, then checks:

* every message whose publish returned is present exactly once: stored, dead-lettered
  or acked — never two of these, never twice in one;
* every message whose ack was confirmed is gone and was never delivered again;
* every message not acked is still there and is delivered again, with a delivery
  count above the deliveries the log saw;
* a confirmed term put the message in the dead-letter stream, once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natsbridge.bridge.broker.store import Store

from .crash_child import CONSUMER, STREAM, SUBJECT, in_doubt

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Log:
    """The child's log, indexed by id."""

    published: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    acked_at: dict[str, int] = field(default_factory=dict)
    last_try: dict[str, str] = field(default_factory=dict)  # "a" or "t": the last one counts
    termed_at: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, path: Path) -> Log:
        log = cls()
        for pos, line in enumerate(path.read_text().splitlines()):
            kind, _, rest = line.partition(" ")
            if kind == "R":
                continue
            if kind == "S":
                log.started.add(rest)
            elif kind == "P":
                log.published.add(rest)
            elif kind == "D":
                x, n = rest.split()
                log.deliveries[x].append((pos, int(n)))
            elif kind in ("a", "t"):
                log.last_try[rest] = kind
            elif kind == "A":
                log.acked_at[rest] = pos
            elif kind == "T":
                log.termed_at[rest] = pos
        return log


def kill_repeatedly(data_dir: Path, log_path: Path, kills: int, seed: int) -> int:
    """Start the child and SIGKILL it, `kills` times; returns how many runs got ready.

    One kill in five lands anywhere in start-up (imports, open, recovery); the others
    wait until the child is ready (however slow the machine) and land at a random point
    of its busy phase.
    """
    rnd = random.Random(seed)
    out = data_dir.parent / "child.out"
    ready_runs = 0
    for run in range(kills):
        early = rnd.random() < 0.2
        with open(out, "wb") as sink:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.broker.crash_child",
                    str(data_dir),
                    str(log_path),
                    str(run),
                ],
                cwd=REPO_ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                if early:
                    time.sleep(rnd.uniform(0.0, 0.6))
                elif _wait_ready(log_path, run, child):
                    ready_runs += 1
                    time.sleep(rnd.uniform(0.05, 0.6))
                child.send_signal(signal.SIGKILL)
                code = child.wait(timeout=30)
            finally:
                if child.poll() is None:
                    child.kill()
        if code != -signal.SIGKILL:
            pytest.fail(f"child run {run} exited by itself ({code}):\n{out.read_text()}")
    return ready_runs


def _wait_ready(log_path: Path, run: int, child: subprocess.Popen[bytes]) -> bool:
    marker = f"R {run}\n".encode()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(max(0, log_path.stat().st_size - 1_000_000))
                if marker in f.read():
                    return True
        time.sleep(0.02)
    return False


def verify(data_dir: Path, log_path: Path) -> dict[str, int]:
    # Resolve publishes still in doubt, as the child itself does on start.
    store = Store.open(data_dir)
    try:
        doubtful = in_doubt(log_path)
        with open(log_path, "a") as f:
            for x in doubtful:
                store.publish(STREAM, SUBJECT, x.encode(), msg_id=x)
                store.commit()
                f.write(f"P {x}\n")
        log = Log.read(log_path)
        assert log.published == log.started

        stored = Counter(m.payload.decode() for m in _all(store, STREAM))
        dead = Counter(m.payload.decode() for m in _all(store, f"{STREAM}.dlq"))
        twice = {x: n for x, n in (stored + dead).items() if n > 1}
        assert not twice, f"stored more than once: {sorted(twice)[:10]}"
        unknown = (set(stored) | set(dead)) - log.published
        assert not unknown, f"stored but never published: {sorted(unknown)[:10]}"

        drained: dict[str, int] = {}
        while rows := store.fetch(STREAM, CONSUMER, 1000).messages:
            for row in rows:
                drained[row[5].decode()] = row[6]
                store.ack(STREAM, CONSUMER, row[0])
            store.commit()
        assert set(drained) == set(stored), "a stored message was not delivered again"

        for x in log.published:
            seen = log.deliveries.get(x, [])
            if x in log.acked_at:
                assert x not in stored and x not in dead, f"acked {x} came back"
                later = [pos for pos, _ in seen if pos > log.acked_at[x]]
                assert not later, f"acked {x} was delivered again"
            elif x in log.termed_at:
                assert dead[x] == 1 and x not in stored, f"termed {x} not dead-lettered once"
                assert not [pos for pos, _ in seen if pos > log.termed_at[x]]
            elif log.last_try.get(x) == "a":  # a term in doubt before it did not happen:
                assert x not in dead, f"{x}: ack in doubt, yet dead-lettered"  # it came back
            elif log.last_try.get(x) == "t":
                assert (x in stored) != (x in dead), (
                    f"{x}: term in doubt, found {stored[x]}+{dead[x]}"
                )
            else:
                assert x in stored, f"published {x} was lost"
                if seen:
                    most = max(n for _, n in seen)
                    assert drained[x] > most, f"{x}: delivery {drained[x]} after {most}"
        return {
            "published": len(log.published),
            "acked": len(log.acked_at),
            "redelivered_at_end": sum(1 for x in drained if log.deliveries.get(x)),
            "in_doubt": len(doubtful),
            "remaining": len(stored),
            "dead": len(dead),
        }
    finally:
        store.close()


def _all(store: Store, stream: str) -> list:  # type: ignore[type-arg]
    out = []
    start = 1
    while batch := store.messages(stream, start, 5000):
        out.extend(batch)
        start = batch[-1].seq + 1
    return out


def run_crash_test(tmp_path: Path, kills: int, seed: int) -> dict[str, int]:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "log"
    ready = kill_repeatedly(data_dir, log_path, kills, seed)
    assert ready >= kills // 2, f"only {ready} of {kills} runs got going"
    stats = verify(data_dir, log_path)
    assert stats["published"] > kills * 20, stats  # the kills hit a busy process
    assert stats["acked"] > 0 and stats["redelivered_at_end"] > 0, stats
    return stats


def test_a_few_kills(tmp_path: Path) -> None:
    run_crash_test(tmp_path, kills=5, seed=1)


@pytest.mark.slow
def test_sixty_kills(tmp_path: Path) -> None:
    stats = run_crash_test(tmp_path, kills=60, seed=int(os.environ.get("CRASH_SEED", "7")))
    print(f"crash test: {stats}")
