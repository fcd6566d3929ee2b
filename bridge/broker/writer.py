"""The embedded broker's writer thread (the base of bridge.broker.broker.Broker).

It opens the `Store` and owns it until close: it takes everything queued (up to
`BrokerOptions.max_batch` appended messages), applies it, commits once, and settles
all the callers' futures with one `call_soon_threadsafe`. After a storage error it
reopens the store at its last commit (see `Writer._reopen`); a damaged file fails the
broker for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from natsbridge.bridge.broker.config import PubAck, StreamConfig, Synchronous
from natsbridge.bridge.broker.store import MAINTENANCE_INTERVAL_S, Store
from natsbridge.bridge.errors import BridgeError, StoreCorrupted, StoreError

log = logging.getLogger("natsbridge.broker")

DEFAULT_MAX_BATCH = 8192
"""Most messages the writer appends in one transaction."""
MAX_OPS_PER_CYCLE = 65536  # queue items taken at once (a coalesced burst is one item)


T = TypeVar("T")

Op = tuple[Callable[..., Any], Any, tuple[Any, ...]]
"""A queued operation: (method, future, arguments). The writer calls method(store,
*arguments) and settles the future with the outcome. A None future marks an operation
nobody awaits (an ack, nak, term): kept and applied again when a failed store is
reopened. Two methods the writer carries out itself: `PUBLISH_EACH` (arguments: the
items and their futures) appends within its batch budget, `CLOSE` stops it."""
PUBLISH_EACH = Store.publish_each  # the publishes of one loop iteration, coalesced
CLOSE = Store.close  # commit, answer, stop: the writer then closes the store
_READS = frozenset({Store.stream_info, Store.streams, Store.consumer_info})
"""Calls a read-only view answers while the store is being reopened."""
REOPEN_INITIAL_S = 0.1  # first wait before reopening a store after a storage error
REOPEN_MAX_S = 5.0  # longest wait between attempts (a freed disk is noticed this soon)


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """How the broker runs its store.

    `synchronous` other than FULL gives up durability on power loss: benchmarks only.
    """

    synchronous: Synchronous = Synchronous.FULL
    max_batch: int = DEFAULT_MAX_BATCH


class Signal:
    """Wakes fetchers waiting on a stream: `gen` counts the notifications."""

    __slots__ = ("gen", "waiters")

    def __init__(self) -> None:
        self.gen = 0
        self.waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        """Wake every waiter, and count it."""
        self.gen += 1
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class Writer:
    """The base of Broker: the writer thread that owns the store, and settling callers."""

    data_dir: Path
    options: BrokerOptions
    _loop: asyncio.AbstractEventLoop
    _queue: queue.SimpleQueue[Op]
    _failure: BaseException | None
    _unavailable: bool
    _signals: dict[str, Signal]

    def _run(self, opened: asyncio.Future[list[StreamConfig]]) -> None:
        loop = self._loop
        try:
            first = Store.open(self.data_dir, synchronous=self.options.synchronous)
        except BaseException as exc:
            loop.call_soon_threadsafe(set_exception, opened, exc)
            return
        loop.call_soon_threadsafe(set_result, opened, first.stream_configs())
        store: Store | None = first
        replay: list[Op] = []  # operations to apply first, after a reopen
        while store is not None:
            failure: StoreError | None = None
            try:
                failure = self._serve(store, replay)
            except BaseException as exc:  # a bug: fail loudly rather than hang callers
                log.exception("embedded broker writer stopped")
                self._failure = self._failure or exc
            finally:
                with contextlib.suppress(Exception):
                    store.close()
            if isinstance(failure, StoreCorrupted):
                self._failure = failure
            if failure is None or self._failure is not None:
                break
            store = self._reopen(store, failure, replay)
        if self._failure is not None:
            self._serve_failed(self._failure)

    def _reopen(self, old: Store, failure: StoreError, replay: list[Op]) -> Store | None:
        """After a storage error (disk full, I/O error): reopen the store at its last commit.

        Retried with back-off until it opens; meanwhile writes and fetches get StoreError
        at once (the runtime holds its source back and retries), while acks, naks and
        terms, which have no caller to tell, wait in `replay` for the reopened store.
        Counters and infos are answered from the last commit, so gauges stay true.
        None when the broker is closed meanwhile or the file turns out damaged.
        """
        if not self._unavailable:  # once per outage, not once per attempt
            self._unavailable = True
            log.error(
                "embedded buffer unavailable, reopening it until it works: %s",
                failure,
                extra={"event": "buffer_unavailable"},
            )
        delay = REOPEN_INITIAL_S
        while not self._answer_until(time.monotonic() + delay, failure, replay):
            try:
                store = Store.open(self.data_dir, synchronous=self.options.synchronous)
            except StoreCorrupted as exc:
                self._failure = exc
                return None
            except StoreError as exc:
                failure, delay = exc, min(delay * 2, REOPEN_MAX_S)
                continue
            store.keep_deliveries(old)
            return store
        return None

    def _answer_until(self, deadline: float, failure: StoreError, replay: list[Op]) -> bool:
        """Answer operations until `deadline`; True once closed."""
        error = StoreError(f"embedded buffer unavailable: {failure}")
        while (left := deadline - time.monotonic()) > 0:
            try:
                op = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if _no_caller(op):
                replay.append(op)
                continue
            method, fut, args = op
            closing = method is CLOSE
            futures = args[1] if method is PUBLISH_EACH else [fut]
            outcomes = [(f, None, True) if closing else (f, error, False) for f in futures]
            if method in _READS:
                outcomes = [self._read_committed(op)]
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._resolve, outcomes, set())
            if closing:
                return True
        return False

    def _read_committed(self, op: Op) -> tuple[asyncio.Future[Any], Any, bool]:
        """Answer a read from a read-only view of the last commit, opened for it alone.

        Never kept open while the store is reopened: opening checks the file's header
        with a plain open() and close(), and closing any descriptor of the file drops
        every POSIX lock this process holds on it, including SQLite's own; another
        process could then delete the write-ahead log that a connection here still uses.
        """
        try:
            with Store.open(self.data_dir, read_only=True) as view:
                return op[1], op[0](view, *op[2]), True
        except BridgeError as exc:
            return op[1], exc, False

    def _serve(self, store: Store, replay: list[Op]) -> StoreError | None:
        """Apply queued operations in batches, one commit per batch, until close or failure.

        Returns the storage error that stopped it (None once closed); `replay` then holds
        the operations without a caller to tell (acks, naks, terms) and those not begun.
        """
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        empty = self._queue.empty
        loop = self._loop
        resolve = self._resolve
        carry, replay[:] = replay[:], []  # operations first in line (left over, replayed)
        while True:
            if carry:
                ops, carry = carry, []
            else:
                try:
                    ops = [get(timeout=MAINTENANCE_INTERVAL_S)]
                except queue.Empty:
                    try:
                        store.maintain(idle=True)
                        store.commit()
                    except StoreError as exc:
                        return exc
                    continue
            with contextlib.suppress(queue.Empty):
                while len(ops) < MAX_OPS_PER_CYCLE:
                    ops.append(get_nowait())
            results: list[tuple[asyncio.Future[Any], Any, bool]] = []
            closing, carry, begun = self._apply(store, ops, results)
            failure: StoreError | None = None
            try:
                store.maintain(idle=empty())
                if store.commit() and self._unavailable:
                    self._unavailable = False
                    log.warning("embedded buffer writes again", extra={"event": "buffer_recovered"})
            except StoreError as exc:
                # Nothing of this batch is durable: every caller in it gets the error.
                results = [(fut, exc, False) for fut, _, _ in results]
                failure = exc
                replay[:] = [op for op in ops[:begun] if _no_caller(op)] + carry
            appended = store.appended
            store.appended = set()
            if closing is not None and not carry:
                results.append((closing, None, True))
            loop.call_soon_threadsafe(resolve, results, appended)
            if closing is not None:
                return None
            if failure is not None:
                return failure

    def _apply(
        self, store: Store, ops: list[Op], results: list[tuple[asyncio.Future[Any], Any, bool]]
    ) -> tuple[asyncio.Future[Any] | None, list[Op], int]:
        """Apply `ops` to `store` (uncommitted), adding the callers' outcomes to `results`.

        Returns the close operation's future if one came, the operations left for the
        next transaction (appends beyond `max_batch`, and all after them), and how many
        operations were begun.
        """
        publish_each = store.publish_each
        closing: asyncio.Future[Any] | None = None
        carry: list[Op] = []
        budget = max(self.options.max_batch, 1)  # messages appended in this transaction
        begun = len(ops)
        for index, op in enumerate(ops):
            method, fut, args = op
            try:
                if method is PUBLISH_EACH:
                    items, futures = args
                    if len(items) > budget:
                        # Commit what fits now; the rest, and everything after it,
                        # goes first in the next transaction (order is kept).
                        carry = [
                            (PUBLISH_EACH, None, (items[budget:], futures[budget:])),
                            *ops[index + 1 :],
                        ]
                        items, futures = items[:budget], futures[:budget]
                    budget -= len(items)
                    try:
                        outcomes = publish_each(items)
                    except BridgeError as exc:
                        outcomes = [exc] * len(items)
                    for pub, outcome in zip(futures, outcomes, strict=True):
                        results.append((pub, outcome, type(outcome) is PubAck))
                    if carry:
                        begun = index + 1
                        break
                elif fut is None:
                    method(store, *args)
                elif method is CLOSE:
                    closing = fut
                else:
                    results.append((fut, method(store, *args), True))
            except (BridgeError, ValueError, TypeError) as exc:
                if fut is not None:
                    results.append((fut, exc, False))
                else:
                    log.warning("broker operation failed: %s", exc)
        return closing, carry, begun

    def _serve_failed(self, failure: BaseException) -> None:
        """After a failure: answer every operation with StoreError until close."""
        while True:
            op = self._queue.get()
            fut = op[1]
            if fut is not None:
                if op[0] is CLOSE:
                    outcome: tuple[Any, bool] = (None, True)
                else:
                    outcome = (StoreError(f"embedded broker failed: {failure}"), False)
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    self._loop.call_soon_threadsafe(self._resolve, [(fut, *outcome)], set())
            if op[0] is CLOSE:
                return

    def _resolve(
        self, results: list[tuple[asyncio.Future[Any], Any, bool]], appended: set[str]
    ) -> None:
        """On the loop: settle a whole batch of callers at once, then wake fetchers."""
        for fut, value, ok in results:
            if fut.done():
                continue  # cancelled meanwhile
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        signals = self._signals
        for name in appended:
            signal = signals.get(name)
            if signal is not None:
                signal.notify()
        if self._failure is not None:
            for signal in signals.values():
                signal.notify()


def _no_caller(op: Op) -> bool:
    """Whether nobody awaits `op` (an ack, nak, term: replayed after a reopen)."""
    return op[1] is None and op[0] is not PUBLISH_EACH


def set_result(fut: asyncio.Future[T], value: T) -> None:
    """Resolve `fut` unless it is done (cancelled) already."""
    if not fut.done():
        fut.set_result(value)


def set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail `fut` unless it is done (cancelled) already."""
    if not fut.done():
        fut.set_exception(exc)
