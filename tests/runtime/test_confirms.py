"""Confirms: how a sink waits for a batch of per-message confirms (pure asyncio, no broker).

No asyncio plugin for pytest here: each test runs its scenario with asyncio.run.
"""

from __future__ import annotations

import asyncio

import pytest

from natsbridge.bridge.connector import Confirms
from natsbridge.bridge.errors import ConnectionLost, MessageRejected


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
    assert confirms.pending == 3 and not await confirms.drain(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [f.cancelled() for f in futures] == [False, True, True]
    assert confirms.pending == 0 and await confirms.drain(0.01)
