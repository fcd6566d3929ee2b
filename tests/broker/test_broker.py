"""The asyncio Broker: group commit, fetch waits, acks through Msg, failures, memory."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from natsbridge.bridge.broker import (
    Broker,
    ConsumerConfig,
    Outgoing,
    PubAck,
    Retention,
    StreamConfig,
)
from natsbridge.bridge.errors import NotFound, PayloadTooLarge, StoreError, StreamFull
from natsbridge.mappings.headers import BRIDGE_REASON


def async_test(fn: Callable[[Broker, Path], Awaitable[None]]) -> Callable[[Path], None]:
    """Run `fn(broker, data_dir)` on a fresh broker with stream "orders" (work queue,
    dead letters in "orders.dlq", 1000-byte payload limit) and its consumer "deliver".
    There is no asyncio plugin for pytest here: each test is one asyncio.run."""

    def wrapper(tmp_path: Path) -> None:
        async def main() -> None:
            broker = await Broker.open(tmp_path)
            await broker.add_stream(
                StreamConfig(
                    name="orders",
                    retention=Retention.WORKQUEUE,
                    dead_letter="orders.dlq",
                    max_msg_size=1000,
                )
            )
            await broker.add_consumer("orders", ConsumerConfig(name="deliver", ack_wait=30.0))
            try:
                await fn(broker, tmp_path)
            finally:
                await broker.close()

        asyncio.run(main())

    wrapper.__name__ = fn.__name__
    return wrapper


@async_test
async def test_concurrent_publishers_share_commits_and_all_arrive(
    broker: Broker, path: Path
) -> None:
    async def publisher(i: int) -> list[int]:
        return [
            (await broker.publish("orders", f"p.{i}", f"{i}-{j}".encode())).seq for j in range(20)
        ]

    results = await asyncio.gather(*(publisher(i) for i in range(300)))
    all_seqs = sorted(seq for seqs in results for seq in seqs)
    assert all_seqs == list(range(1, 6001))
    await broker.close()
    reopened = await Broker.open(path)
    try:
        info = await reopened.stream_info("orders")
        assert (info.messages, info.last_seq) == (6000, 6000)
        got = await reopened.fetch("orders", "deliver", 10_000, timeout=1)
        assert {m.payload for m in got} == {
            f"{i}-{j}".encode() for i in range(300) for j in range(20)
        }
    finally:
        await reopened.close()


@async_test
async def test_one_bad_publish_fails_alone(broker: Broker, path: Path) -> None:
    futures = [broker.publish("orders", "s", b"x" * (2000 if i == 5 else 10)) for i in range(10)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[5], PayloadTooLarge)
    assert [r.seq for r in results if isinstance(r, PubAck)] == list(range(1, 10))
    with pytest.raises(NotFound):
        await broker.publish("nope", "s", b"")
    with pytest.raises(TypeError):
        await broker.publish("orders", "s", "text")  # type: ignore[arg-type]


@async_test
async def test_dedup_and_publish_many(broker: Broker, path: Path) -> None:
    first = await broker.publish("orders", "s", b"a", msg_id="k1")
    assert await broker.publish("orders", "s", b"a", msg_id="k1") == PubAck(
        "orders", first.seq, True
    )
    acks = await broker.publish_many(
        "orders", [Outgoing("s", b"b", msg_id="k1"), Outgoing("s", b"c")]
    )
    assert acks == [PubAck("orders", 1, True), PubAck("orders", 2)]
    await broker.add_stream(StreamConfig(name="small", max_msgs=1, discard="new"))  # type: ignore[arg-type]
    with pytest.raises(StreamFull):
        await broker.publish_many("small", [Outgoing("s", b"1"), Outgoing("s", b"2")])


@async_test
async def test_fetch_waits_for_a_publish(broker: Broker, path: Path) -> None:
    fetching = asyncio.create_task(broker.fetch("orders", "deliver", 10, timeout=30))
    await asyncio.sleep(0.05)
    assert not fetching.done()
    await broker.publish("orders", "s", b"hello")
    [msg] = await fetching
    assert (msg.seq, msg.payload, msg.deliveries) == (1, b"hello", 1)
    assert await broker.fetch("orders", "deliver", 10, timeout=0.05) == []


@async_test
async def test_fetch_wakes_for_a_redelivery(broker: Broker, path: Path) -> None:
    await broker.add_stream(StreamConfig(name="fast", retention=Retention.WORKQUEUE))
    await broker.add_consumer("fast", ConsumerConfig(name="c", ack_wait=0.2))
    await broker.publish("fast", "s", b"x")
    [first] = await broker.fetch("fast", "c", 1, timeout=1)
    [again] = await broker.fetch("fast", "c", 1, timeout=30)  # returns after the ack wait
    assert (again.seq, again.deliveries) == (first.seq, 2)


@async_test
async def test_nak_and_ack_wake_waiting_fetchers(broker: Broker, path: Path) -> None:
    await broker.add_stream(StreamConfig(name="seq", retention=Retention.WORKQUEUE))
    await broker.add_consumer("seq", ConsumerConfig(name="c", ordered=True))
    await broker.publish_many("seq", [Outgoing("s", b"1"), Outgoing("s", b"2")])
    [one] = await broker.fetch("seq", "c", 10, timeout=1)
    waiting = asyncio.create_task(broker.fetch("seq", "c", 10, timeout=30))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # ordered: nothing more while 1 is in flight
    one.nak()
    [again] = await waiting
    assert (again.seq, again.deliveries) == (1, 2)
    waiting = asyncio.create_task(broker.fetch("seq", "c", 10, timeout=30))
    await asyncio.sleep(0.05)
    again.ack()
    [two] = await waiting
    assert two.payload == b"2"


@async_test
async def test_msg_acks_term_and_flush(broker: Broker, path: Path) -> None:
    await broker.publish_many("orders", [Outgoing("s", b"a", {"H": ["1"]}), Outgoing("s", b"b")])
    a, b = await broker.fetch("orders", "deliver", 10, timeout=1)
    assert a.headers == {"H": ["1"]} and b.headers == {}
    a.ack()
    a.ack()  # harmless
    a.term("too late")  # harmless too: already settled
    b.term("no such queue")
    await broker.flush()
    info = await broker.consumer_info("orders", "deliver")
    assert (info.num_ack_pending, info.num_pending, info.num_dead_lettered) == (0, 0, 1)
    [dead] = await broker.messages("orders.dlq")
    assert dead.headers[BRIDGE_REASON] == ["no such queue"]
    await broker.close()
    reopened = await Broker.open(path)
    try:
        assert await reopened.fetch("orders", "deliver", 10, timeout=0.05) == []
    finally:
        await reopened.close()


@async_test
async def test_ack_by_sequence_and_dead_letter(broker: Broker, path: Path) -> None:
    await broker.publish_many("orders", [Outgoing("s", b"a"), Outgoing("s", b"b")])
    await broker.fetch("orders", "deliver", 10, timeout=1)
    broker.ack("orders", "deliver", [1, 2])
    await broker.flush()
    assert (await broker.stream_info("orders")).messages == 0
    ack = await broker.dead_letter("orders", "raw", b"?", None, "cannot map")
    assert ack.stream == "orders.dlq"


@async_test
async def test_stream_for_subject(broker: Broker, path: Path) -> None:
    await broker.add_stream(StreamConfig(name="eu", subjects=("orders.eu.>",)))
    await broker.add_stream(StreamConfig(name="all", subjects=("orders.*.*",)))
    assert broker.stream_for("orders.us.new") == "all"
    assert broker.stream_for("orders.eu.new") == "all"  # first by name when several match
    assert broker.stream_for("orders.eu.a.b") == "eu"
    with pytest.raises(NotFound):
        broker.stream_for("billing.x")
    await broker.delete_stream("all")
    assert broker.stream_for("orders.eu.new") == "eu"


@async_test
async def test_closed_broker_refuses_calls(broker: Broker, path: Path) -> None:
    await broker.close()
    with pytest.raises(StoreError, match="closed"):
        await broker.publish("orders", "s", b"")
    with pytest.raises(StoreError, match="closed"):
        await broker.fetch("orders", "deliver", 1, timeout=0)
    await broker.close()  # idempotent


@async_test
async def test_second_broker_on_the_same_dir_is_refused(broker: Broker, path: Path) -> None:
    with pytest.raises(StoreError, match="in use"):
        await Broker.open(path)


@async_test
async def test_memory_stays_flat_while_messages_pass(broker: Broker, path: Path) -> None:
    payload = b"x" * 512
    rounds, per_round = 40, 1000

    async def one_round() -> None:
        await asyncio.gather(*(broker.publish("orders", "s", payload) for _ in range(per_round)))
        got = 0
        while got < per_round:
            for msg in await broker.fetch("orders", "deliver", per_round, timeout=1):
                msg.ack()
                got += 1
        await broker.flush()

    tracemalloc.start()
    try:
        for _ in range(rounds // 4):
            await one_round()
        gc.collect()
        warm, _ = tracemalloc.get_traced_memory()
        for _ in range(rounds - rounds // 4):
            await one_round()
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    passed = rounds * per_round * len(payload)
    assert end - warm < 2 * 2**20, f"grew {end - warm} bytes while {passed} bytes passed"
    info = await broker.stream_info("orders")
    assert info.messages == 0 and info.consumers[0].num_ack_pending == 0
