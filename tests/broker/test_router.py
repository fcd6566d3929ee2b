"""The in-process router: wildcards, queue groups, buffering and slow consumers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.broker.router import Router
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeTimeout, SubjectError
from natsbridge.mappings.subjects import match


def env(subject: str, payload: bytes = b"") -> Envelope:
    return Envelope(subject=subject, payload=payload)


def test_wildcards_fan_out() -> None:
    router = Router()
    got: dict[str, list[str]] = {p: [] for p in ("orders.*", "orders.>", "orders.eu", ">")}
    for pattern, seen in got.items():
        router.subscribe(pattern, lambda e, seen=seen: seen.append(e.subject))
    assert router.publish(env("orders.eu")) == 4
    assert router.publish(env("orders.eu.new")) == 2
    assert router.publish(env("billing")) == 1
    assert got == {
        "orders.*": ["orders.eu"],
        "orders.>": ["orders.eu", "orders.eu.new"],
        "orders.eu": ["orders.eu"],
        ">": ["orders.eu", "orders.eu.new", "billing"],
    }


def test_queue_group_gets_each_message_once() -> None:
    router = Router(random.Random(1))
    counts: Counter[str] = Counter()
    for name in ("a", "b", "c"):
        router.subscribe("jobs.*", lambda e, name=name: counts.update([name]), queue="workers")
    plain: list[Envelope] = []
    router.subscribe("jobs.>", plain.append)
    for i in range(300):
        assert router.publish(env(f"jobs.{i}")) == 2  # the plain one and one worker
    assert sum(counts.values()) == 300 and len(plain) == 300
    assert all(n > 50 for n in counts.values())  # all members take a share


def test_buffered_subscription_and_unsubscribe() -> None:
    async def main() -> None:
        router = Router()
        sub = router.subscribe("a.*")
        router.publish(env("a.1", b"1"))
        router.publish(env("a.2", b"2"))
        assert [(await sub.next()).payload, (await sub.next()).payload] == [b"1", b"2"]
        with pytest.raises(BridgeTimeout):
            await sub.next(timeout=0.01)
        waiting = asyncio.create_task(sub.next(timeout=10))
        await asyncio.sleep(0)
        router.publish(env("a.3", b"3"))
        assert (await waiting).payload == b"3"
        router.publish(env("a.4"))
        sub.unsubscribe()
        assert router.publish(env("a.5")) == 0 and len(router) == 0
        assert [e.subject async for e in sub] == ["a.4"]
        with pytest.raises(RuntimeError, match="unsubscribed"):
            await sub.next()

    asyncio.run(main())


def test_slow_consumer_drops_instead_of_blocking() -> None:
    router = Router()
    sub = router.subscribe("x", max_pending=2)
    for _ in range(5):
        router.publish(env("x"))
    assert (sub.pending, sub.delivered, sub.dropped) == (2, 2, 3)


def test_handler_errors_do_not_reach_the_publisher() -> None:
    router = Router()
    seen: list[str] = []

    def broken(e: Envelope) -> None:
        raise ValueError("boom")

    router.subscribe("x", broken)
    router.subscribe("x", lambda e: seen.append(e.subject))
    assert router.publish(env("x")) == 2
    assert seen == ["x"]


def test_invalid_subjects() -> None:
    router = Router()
    with pytest.raises(SubjectError):
        router.subscribe("a.>.b")
    with pytest.raises(SubjectError):
        router.publish(env("a.*"))
    with pytest.raises(SubjectError):
        router.subscribe("a", queue="bad group")


TOKENS = st.sampled_from(["a", "b", "c"])
PATTERN_TOKENS = st.sampled_from(["a", "b", "c", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(PATTERN_TOKENS, min_size=1, max_size=3))
    if draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


@given(
    subs=st.lists(st.tuples(patterns(), st.sampled_from([None, "q1", "q2"])), max_size=8),
    subject=st.lists(TOKENS, min_size=1, max_size=4).map(".".join),
)
def test_router_agrees_with_match(subs: list[tuple[str, str | None]], subject: str) -> None:
    router = Router(random.Random(0))
    received: list[int] = []
    for i, (pattern, queue) in enumerate(subs):
        router.subscribe(pattern, lambda e, i=i: received.append(i), queue=queue)
    router.publish(env(subject))
    matching = {i for i, (p, _) in enumerate(subs) if match(p, subject) is not None}
    plain = {i for i in matching if subs[i][1] is None}
    groups = {subs[i][1] for i in matching if subs[i][1] is not None}
    assert len(received) == len(set(received)) == len(plain) + len(groups)
    assert plain <= set(received) <= matching
    for group in groups:
        assert sum(1 for i in received if subs[i][1] == group) == 1
