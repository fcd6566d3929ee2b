"""The thread<->loop toolkit (bridge.threads): Confirms, Inbox, LoopPoster, DriverThread.

No asyncio plugin for pytest here: each test runs its scenario with asyncio.run.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import pytest

from natsbridge.bridge.errors import BridgeTimeout, ConnectionLost, MessageRejected
from natsbridge.bridge.threads import Completions, Confirms, DriverThread, Inbox, LoopPoster


def test_outcomes_come_back_in_call_order_whatever_the_confirm_order() -> None:
    asyncio.run(_outcomes_come_back_in_call_order_whatever_the_confirm_order())


async def _outcomes_come_back_in_call_order_whatever_the_confirm_order() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(4)]
    rejected, lost = MessageRejected("no"), ConnectionLost("gone")
    loop.call_soon(futures[3].set_result, None)
    loop.call_soon(futures[1].set_exception, rejected)
    loop.call_later(0.01, futures[0].set_result, None)
    loop.call_later(0.02, futures[2].set_exception, lost)
    confirms = Confirms()
    assert await confirms.wait(futures) == [None, rejected, lost, None]
    assert confirms.pending == 0


def test_a_future_cancelled_by_its_sink_is_an_outcome_not_the_callers_cancellation() -> None:
    asyncio.run(_a_future_cancelled_by_its_sink_is_an_outcome_not_the_callers_cancellation())


async def _a_future_cancelled_by_its_sink_is_an_outcome_not_the_callers_cancellation() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(2)]
    loop.call_soon(futures[0].cancel)
    loop.call_soon(futures[1].set_result, None)
    first, second = await Confirms().wait(futures)
    assert isinstance(first, asyncio.CancelledError) and second is None


def test_cancelling_the_caller_cancels_what_still_waits_and_drain_sees_it_end() -> None:
    asyncio.run(_cancelling_the_caller_cancels_what_still_waits_and_drain_sees_it_end())


async def _cancelling_the_caller_cancels_what_still_waits_and_drain_sees_it_end() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
    futures[0].set_result(None)
    confirms = Confirms()
    waiting = asyncio.ensure_future(confirms.wait(futures))
    await asyncio.sleep(0)
    assert confirms.pending == 3 and not await confirms.drain(0.01, "test sink")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [f.cancelled() for f in futures] == [False, True, True]
    assert confirms.pending == 0 and await confirms.drain(0.01, "test sink")


def test_send_each_fails_only_the_item_whose_submit_raised() -> None:
    asyncio.run(_send_each_fails_only_the_item_whose_submit_raised())


async def _send_each_fails_only_the_item_whose_submit_raised() -> None:
    loop = asyncio.get_running_loop()
    refused = MessageRejected("bad item")

    def submit(item: int) -> asyncio.Future[None]:
        if item == 2:
            raise refused
        future: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.01 * (4 - item), future.set_result, None)
        return future

    confirms = Confirms()
    assert await confirms.send_each([1, 2, 3], submit) == [None, refused, None]
    assert confirms.pending == 0


def test_a_burst_posted_from_a_thread_crosses_in_one_batch_in_order() -> None:
    asyncio.run(_a_burst_posted_from_a_thread_crosses_in_one_batch_in_order())


async def _a_burst_posted_from_a_thread_crosses_in_one_batch_in_order() -> None:
    batches: list[list[int]] = []
    poster: LoopPoster[int] = LoopPoster(batches.append)

    def burst() -> None:
        for i in range(1000):
            poster.post(i)
        poster.post_all(range(1000, 1010))

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()  # the loop is blocked meanwhile: the whole burst waits for one wake-up
    for _ in range(3):
        await asyncio.sleep(0)
    assert batches == [list(range(1010))]
    poster.post(7)  # on the loop's own thread too
    await asyncio.sleep(0)
    assert batches[1:] == [[7]]


def test_an_inbox_hands_over_what_it_has_then_raises_why_it_ended() -> None:
    asyncio.run(_an_inbox_hands_over_what_it_has_then_raises_why_it_ended())


async def _an_inbox_hands_over_what_it_has_then_raises_why_it_ended() -> None:
    inbox: Inbox[int] = Inbox()
    assert await inbox.take(10, 0.01) == []
    threading.Thread(target=inbox.post_all, args=([1, 2, 3],)).start()
    assert await inbox.take(2, 5) == [1, 2]  # woken by the post, not by the timeout
    lost = ConnectionLost("gone")
    inbox.end(lost)
    inbox.end(MessageRejected("later"))  # the first reason counts
    assert await inbox.take(10, 5) == [3]
    with pytest.raises(ConnectionLost) as first:
        await inbox.take(10, 5)
    with pytest.raises(ConnectionLost) as second:
        await inbox.take(10, 5)
    assert first.value is lost and second.value is not lost and str(second.value) == "gone"


def test_ending_an_inbox_with_discard_drops_what_was_posted_but_not_taken() -> None:
    asyncio.run(_ending_an_inbox_with_discard_drops_what_was_posted_but_not_taken())


async def _ending_an_inbox_with_discard_drops_what_was_posted_but_not_taken() -> None:
    inbox: Inbox[int] = Inbox()
    inbox.append(1)
    inbox.post(2)  # not yet delivered to the loop
    inbox.end(ConnectionLost("gone"), discard=True)
    await asyncio.sleep(0)  # the poster's scheduled drain finds nothing
    assert inbox.items == deque()
    with pytest.raises(ConnectionLost):
        await inbox.take(10, 5)


def test_a_full_inbox_holds_put_until_take_makes_room() -> None:
    asyncio.run(_a_full_inbox_holds_put_until_take_makes_room())


async def _a_full_inbox_holds_put_until_take_makes_room() -> None:
    inbox: Inbox[int] = Inbox(capacity=2)
    await inbox.put(1)
    await inbox.put(2)
    third = asyncio.ensure_future(inbox.put(3))
    await asyncio.sleep(0)
    assert not third.done() and list(inbox.items) == [1, 2]
    assert await inbox.take(1, 1) == [1]
    await third
    assert list(inbox.items) == [2, 3]


def test_completions_settle_a_burst_from_a_thread_and_flush_settles_at_once() -> None:
    asyncio.run(_completions_settle_a_burst_from_a_thread_and_flush_settles_at_once())


async def _completions_settle_a_burst_from_a_thread_and_flush_settles_at_once() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
    completions = Completions()
    rejected = MessageRejected("no")
    thread = threading.Thread(
        target=completions.settle_all, args=([(futures[0], None), (futures[1], rejected)],)
    )
    thread.start()
    thread.join()
    completions.settle(futures[2])
    assert not any(f.done() for f in futures)
    completions.flush()
    assert [f.exception() for f in futures] == [None, rejected, None]


def test_a_driver_thread_reports_why_it_could_not_open() -> None:
    asyncio.run(_a_driver_thread_reports_why_it_could_not_open())


async def _a_driver_thread_reports_why_it_could_not_open() -> None:
    refused = MessageRejected("refused")
    stops: list[str] = []
    failing = DriverThread("t", lambda driver: driver.opened_with(refused))
    with pytest.raises(MessageRejected):
        await failing.start(5, "test", lambda: stops.append("failing"))
    crashing = DriverThread("t", lambda driver: None)  # ended without a word
    with pytest.raises(ConnectionLost, match="thread ended"):
        await crashing.start(5, "test", lambda: stops.append("crashing"))
    release = threading.Event()
    silent = DriverThread("t", lambda driver: release.wait(5))
    with pytest.raises(BridgeTimeout, match="test: not connected after"):
        await silent.start(0.05, "test", release.set)
    assert await silent.join(5)
    assert stops == ["failing", "crashing"]


def test_a_driver_thread_opens_and_ends() -> None:
    asyncio.run(_a_driver_thread_opens_and_ends())


async def _a_driver_thread_opens_and_ends() -> None:
    stop = threading.Event()

    def main(driver: DriverThread) -> None:
        driver.opened_with(None)
        stop.wait(5)

    thread = DriverThread("t", main)
    await thread.start(5, "test", stop.set)
    assert not thread.ended.done()
    stop.set()
    assert await thread.join(5)
