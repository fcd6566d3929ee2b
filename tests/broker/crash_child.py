"""Child process of the crash test: publishes, consumes and settles until it is killed.

    python -m tests.broker.crash_child DATA_DIR LOG RUN

Every intent and every confirmation goes to LOG with one O_APPEND write (which
survives kill -9), one line each:

    R run     this run is open and ready
    S id      about to publish id (with msg_id=id)
    P id      the publish returned: durable
    D id n    delivered, n-th delivery
    a id      about to ack            A id   the ack is durable (after flush)
    t id      about to term           T id   the term is durable (after flush)

On start, ids that were about to be published but never confirmed (S without P) are
published again with the same message id, as a source redelivers what it never saw
acknowledged: the dedup window must keep them from being stored twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

from natsbridge.bridge.broker import Broker, ConsumerConfig, Outgoing, Retention, StreamConfig

STREAM = "s"
CONSUMER = "c"
SUBJECT = "crash.test"
PUBLISHERS = 8


def in_doubt(log_path: Path) -> list[str]:
    """Ids whose publish was started and never confirmed, in log order."""
    started: dict[str, None] = {}
    confirmed: set[str] = set()
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "S":
                started[rest] = None
            elif kind == "P":
                confirmed.add(rest)
    return [x for x in started if x not in confirmed]


async def main(data_dir: Path, log_path: Path, run: int) -> None:
    doubtful = in_doubt(log_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(*lines: str) -> None:
        if lines:
            os.write(fd, "".join(f"{line}\n" for line in lines).encode())

    broker = await Broker.open(data_dir)
    await broker.add_stream(
        StreamConfig(name=STREAM, retention=Retention.WORKQUEUE, dead_letter=f"{STREAM}.dlq")
    )
    await broker.add_consumer(STREAM, ConsumerConfig(name=CONSUMER, ack_wait=60.0))
    log(f"R {run}")
    rnd = random.Random(run)

    for x in doubtful:
        log(f"S {x}")
        await broker.publish(STREAM, SUBJECT, x.encode(), msg_id=x)
        log(f"P {x}")

    async def publisher(k: int) -> None:
        i = 0
        while True:
            if k % 2:
                ids = [f"{run}.{k}.{i + j}" for j in range(5)]
                i += 5
                log(*(f"S {x}" for x in ids))
                await broker.publish_many(
                    STREAM, [Outgoing(SUBJECT, x.encode(), msg_id=x) for x in ids]
                )
                log(*(f"P {x}" for x in ids))
            else:
                x = f"{run}.{k}.{i}"
                i += 1
                log(f"S {x}")
                await broker.publish(STREAM, SUBJECT, x.encode(), msg_id=x)
                log(f"P {x}")
            await asyncio.sleep(rnd.uniform(0, 0.004))

    async def consumer() -> None:
        while True:
            msgs = await broker.fetch(STREAM, CONSUMER, 50, timeout=0.1)
            log(*(f"D {m.payload.decode()} {m.deliveries}" for m in msgs))
            acked: list[str] = []
            termed: list[str] = []
            for m in msgs:
                x = m.payload.decode()
                roll = rnd.random()
                if roll < 0.7:
                    log(f"a {x}")
                    m.ack()
                    acked.append(x)
                elif roll < 0.8:
                    m.nak()
                elif roll < 0.85:
                    log(f"t {x}")
                    m.term("crash-test")
                    termed.append(x)
                # else: left unacked, delivered again after a restart
            await broker.flush()
            log(*(f"A {x}" for x in acked), *(f"T {x}" for x in termed))

    await asyncio.gather(*(publisher(k) for k in range(PUBLISHERS)), consumer())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
