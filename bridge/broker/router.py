"""Core-NATS-style fan-out inside the process: subjects, `*` and `>`, queue groups.

At most once and in memory, as core NATS: `Router.publish(envelope)` hands the envelope
to every subscription whose pattern matches its subject, and to one member (chosen at
random, as nats-server does) of each matching queue group. Nothing is stored; a
subscription whose buffer is full drops the message and counts it (a "slow consumer"),
so a stuck reader never blocks a publisher. For delivery that survives restarts, use
streams (`Broker`).

A subscription either calls a function for each message (in `publish`, on the caller's
thread; exceptions are logged, never raised to the publisher) or buffers messages to be
read with `await sub.next()` or `async for envelope in sub`. The router is not
thread-safe: use it from the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeTimeout, SubjectError
from natsbridge.mappings.subjects import Sublist, is_valid_subject, validate_pattern

log = logging.getLogger("natsbridge.router")

DEFAULT_MAX_PENDING = 65536
"""Messages a buffered subscription holds before it drops (nats.py's default)."""

Handler = Callable[[Envelope], None]


class Subscription:
    """Interest in a subject pattern, alone or as a member of a queue group."""

    def __init__(
        self,
        router: Router,
        pattern: str,
        queue: str | None,
        handler: Handler | None,
        max_pending: int,
    ) -> None:
        """Made by Router.subscribe."""
        self.pattern = pattern
        self.queue = queue
        self.delivered = 0
        self.dropped = 0  # slow consumer: the buffer was full
        self._router: Router | None = router
        self._handler = handler
        self._max_pending = max_pending
        self._buffer: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def active(self) -> bool:
        """False once unsubscribed."""
        return self._router is not None

    @property
    def pending(self) -> int:
        """Messages buffered and not read yet."""
        return len(self._buffer)

    def _deliver(self, envelope: Envelope) -> None:
        if self._handler is not None:
            self.delivered += 1
            try:
                self._handler(envelope)
            except Exception:
                log.exception("subscription %r: handler failed", self.pattern)
            return
        if len(self._buffer) >= self._max_pending:
            self.dropped += 1
            return
        self.delivered += 1
        self._buffer.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout: float | None = None) -> Envelope:
        """The next buffered message; BridgeTimeout after `timeout` seconds,
        RuntimeError once unsubscribed and drained."""
        envelope = await self._next(timeout)
        if envelope is None:
            raise RuntimeError(f"subscription to {self.pattern!r} was unsubscribed")
        return envelope

    async def _next(self, timeout: float | None) -> Envelope | None:
        if self._handler is not None:
            raise RuntimeError("a subscription with a handler has no buffer to read")
        while not self._buffer:
            if self._router is None:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise BridgeTimeout(f"no message on {self.pattern!r} within {timeout}s") from None
            finally:
                self._waiter = None
        return self._buffer.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        """Buffered messages until unsubscribed and drained."""
        envelope = await self._next(None)
        if envelope is None:
            raise StopAsyncIteration
        return envelope

    def unsubscribe(self) -> None:
        """Stop receiving; buffered messages can still be read, then iteration ends."""
        router, self._router = self._router, None
        if router is not None:
            router._remove(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Router:
    """Subject-based fan-out between parts of one process (see the module doc)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        """`rng` picks queue-group members (seed it for repeatable tests)."""
        self._subs: Sublist[Subscription] = Sublist()
        self._random = rng or random.Random()

    def __len__(self) -> int:
        """Number of active subscriptions."""
        return len(self._subs)

    def subscribe(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        queue: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        """Receive messages whose subject matches `pattern` (NATS wildcards allowed).

        With `queue`, each message goes to one member of the group. With `handler`,
        messages are passed to it as they are published; without, they are buffered.
        """
        validate_pattern(pattern)
        if queue is not None and (not queue or not is_valid_subject(queue)):
            raise SubjectError(f"invalid queue group name {queue!r}")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        sub = Subscription(self, pattern, queue, handler, max_pending)
        self._subs.insert(pattern, sub, queue)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subs.remove(sub.pattern, sub, sub.queue)

    def publish(self, envelope: Envelope) -> int:
        """Deliver `envelope` by its subject; returns how many subscriptions got it."""
        if not is_valid_subject(envelope.subject):
            raise SubjectError(f"cannot publish to {envelope.subject!r}: not a valid subject")
        found = self._subs.match(envelope.subject)
        for sub in found.plain:
            sub._deliver(envelope)
        for members in found.queues.values():
            self._random.choice(members)._deliver(envelope)
        return len(found.plain) + len(found.queues)
