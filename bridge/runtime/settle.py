"""The settle/retry policy (a layer of bridge.runtime.route.RouteRunner): settle what the
sink confirmed, dead-letter what it refused for good, resend the rest with back-off, and
find a poison message after lost connections (see `_settle_until_done`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from natsbridge.bridge.errors import (
    ConnectionLost,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.runtime.backoff import Backoff
from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.bridge.runtime.dead_letters import buffered_text, reason_of
from natsbridge.bridge.runtime.endpoints import RouteEndpoints

MAX_UNEXPECTED_FAILURES = 5  # a bug in a connector must not retry one message forever


class SettlePolicy(RouteEndpoints):
    """How the outcome of a send is settled, retried or dead-lettered."""

    async def _settle_until_done(
        self, items: Sequence[Buffered], results: Sequence[BaseException | None]
    ) -> None:
        """Settle `items` as `results` say, resending what failed until delivered or dead.

        After a lost connection nobody knows which message, if any, made the destination
        drop it: the oldest failed message is sent again alone, on the new connection,
        and the rest follow as one batch once it got through. A message that loses the
        connection `retry.poison_after` times when sent alone is dead-lettered as poison.
        A broker that is down never counts: only sends on an established connection do.
        """
        assert self.buffer is not None
        pending, outcomes = list(items), list(results)
        waiting: list[Buffered] = []  # failed, older-first, not yet sent again
        backoff = Backoff(self.route.spec.retry)
        failures: dict[int, int] = {}
        strikes: dict[int, int] = {}
        alone = False  # `pending` is one message sent alone on a fresh connection
        while True:
            retry, lost = await self._settle_outcomes(pending, outcomes, failures)
            if alone and lost is not None and retry and await self._poison(retry, lost, strikes):
                retry = []
            waiting = retry + waiting
            if not waiting:
                return
            self.stats.retries += len(retry)
            if lost is not None:
                if not await self._reconnect(self.sink, "sink", lost):
                    return  # stopped: the rest stays buffered for the next start
            elif retry:
                await asyncio.sleep(backoff.next())
            # After a lost connection the oldest goes alone; once it passed, the rest.
            alone = lost is not None
            pending, waiting = (waiting[:1], waiting[1:]) if alone else (waiting, [])
            outcomes = await self.sink.send_batch([item.envelope for item in pending])

    async def _poison(
        self, retry: list[Buffered], lost: ConnectionLost, strikes: dict[int, int]
    ) -> bool:
        """One more strike for the message sent alone; True once dead-lettered as poison."""
        [suspect] = retry
        times = strikes[suspect.seq] = strikes.get(suspect.seq, 0) + 1
        if times < self.route.spec.retry.poison_after:
            return False
        reason = f"poison: lost the connection all {times} times it was sent alone: {lost}"
        await self._dead_letter_buffered(suspect, reason, "poison")
        return True

    async def _settle_confirmed(self, done: list[Buffered]) -> None:
        """Settle what the sink confirmed in the buffer, and count it delivered."""
        assert self.buffer is not None
        await self.buffer.settle([item.seq for item in done])
        self.stats.in_flight -= len(done)
        self._count_delivered([item.envelope for item in done])
        self._backoff["sink"].reset()  # the sink's connection works

    async def _settle_outcomes(
        self,
        items: Sequence[Buffered],
        results: Sequence[BaseException | None],
        failures: dict[int, int],
    ) -> tuple[list[Buffered], ConnectionLost | None]:
        """Settle the confirmed, dead-letter the refused; the rest, and a ConnectionLost seen."""
        assert self.buffer is not None
        self.tracing.settled(items, results)
        done = [item for item, result in zip(items, results, strict=True) if result is None]
        if done:
            await self._settle_confirmed(done)
        if len(done) == len(items):
            return [], None
        retry: list[Buffered] = []
        lost: ConnectionLost | None = None
        for item, result in zip(items, results, strict=True):
            if result is None:
                continue
            if isinstance(result, PermanentError) or (
                not isinstance(result, RetryableError)
                and failures.setdefault(item.seq, 0) >= MAX_UNEXPECTED_FAILURES
            ):
                await self._dead_letter_buffered(item, reason_of(result), type(result).__name__)
                continue
            if not isinstance(result, RetryableError):
                failures[item.seq] += 1
                self._log.error(
                    "unexpected error from the sink",
                    exc_info=result,
                    extra={"event": "sink_error", "connection": self.route.sink.connection},
                )
            if isinstance(result, ConnectionLost):
                lost = result
            retry.append(item)
        if lost is None and retry:
            self.stats.error(next(r for r in results if isinstance(r, BaseException)))
        return retry, lost

    async def _dead_letter_buffered(self, item: Buffered, reason: str, kind: str) -> None:
        """Move a buffered message to the dead letters: counted, and one WARNING line."""
        assert self.buffer is not None
        await self._retry_store(partial(self.buffer.dead_letter, item.envelope, reason, item.seq))
        self.tracing.dead_lettered(item, reason)
        self.stats.dead_letter(kind)
        self.stats.in_flight -= 1
        self._dead_letter_warnings.warn(
            "message dead-lettered (%s): %s",
            buffered_text(item),
            reason,
            extra={"event": "dead_lettered", "connection": self.route.sink.connection},
        )
