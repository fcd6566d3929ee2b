"""The files source: a directory scanned every `poll_interval`, one file one message.

Blocking file I/O runs on one worker thread per connection (a single-thread executor), so
the event loop never waits on the disk and the spool's bookkeeping needs no lock. Settling
a message submits its move to that thread: `ack` returns at once, from any thread.

What settling does:

    ack(None)            the file (and its sidecar) moves to done/
    ack(PermanentError)  it moves to rejected/
    ack(other error)     it stays, and is read again by a later receive()
    never settled        it stays, and is read again after the next connect()

A file the source could not read (unreadable sidecar, over `max_size`) is handed over as
`unreadable`: the runtime dead-letters it with the reason and acks it, and the file moves
to rejected/ rather than done/.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from natsbridge.sdk import (
    AckOnce,
    ConnectionLost,
    Envelope,
    Incoming,
    PermanentError,
    Route,
    unreadable,
)
from natsbridge_files import FilesOrigin
from natsbridge_files.config import FilesConnection, FilesSource
from natsbridge_files.spool import Message, Outcome, Spool

log = logging.getLogger("natsbridge.files")


class DirectorySource:
    """Source reading one directory of a `files` connection (see the module docstring)."""

    def __init__(self, route: Route, connection: FilesConnection) -> None:
        spec = route.source
        assert isinstance(spec, FilesSource)
        self._route = route.name
        self._connection = spec.connection
        self._spec = spec
        self.spool = Spool(Path(connection.root, spec.directory), spec.pattern, spec.max_size)
        self._worker: ThreadPoolExecutor | None = None

    async def connect(self) -> None:
        """Check (or create) the directory; unsettled files of an earlier connection come back."""
        await self.close()
        worker = ThreadPoolExecutor(1, thread_name_prefix=f"files-{self._route}")
        try:
            await asyncio.wrap_future(worker.submit(self.spool.open, self._spec.create))
        except FileNotFoundError as exc:
            worker.shutdown()
            raise PermanentError(f"files: {exc} (set `create: true` to create it)") from None
        except OSError as exc:
            worker.shutdown()
            raise ConnectionLost(f"files: cannot open {self.spool.directory}: {exc}") from exc
        self._worker = worker

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` files, oldest first, scanning until one is there or `timeout`."""
        worker = self._worker
        if worker is None:
            raise ConnectionLost("files: source not connected")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                taken = await asyncio.wrap_future(worker.submit(self.spool.take, max_messages))
            except OSError as exc:  # the directory went away (an unmounted share …)
                raise ConnectionLost(f"files: cannot read {self.spool.directory}: {exc}") from exc
            if taken:
                return [self._incoming(worker, message) for message in taken]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return ()
            await asyncio.sleep(min(self._spec.poll_interval, remaining))

    async def close(self) -> None:
        """Finish the moves of the messages already settled, then stop. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.shutdown)

    def _incoming(self, worker: ThreadPoolExecutor, message: Message) -> Incoming:
        origin = FilesOrigin(self._connection, "files", message.name, str(self.spool.directory))
        envelope = Envelope(
            message.name, message.payload, message.headers, msg_id=message.msg_id, origin=origin
        )
        ack = AckOnce(partial(self._settle, worker, message.name, message.error is not None))
        if message.error is not None:
            return unreadable(envelope, ack, message.error, "files")
        return Incoming(envelope, ack)

    def _settle(
        self, worker: ThreadPoolExecutor, name: str, refused: bool, error: BaseException | None
    ) -> None:
        if error is None:  # `refused`: handed over as unreadable, and dead-lettered
            outcome = Outcome.REJECTED if refused else Outcome.DONE
        else:
            outcome = Outcome.REJECTED if isinstance(error, PermanentError) else Outcome.RETRY
        try:
            moved = worker.submit(self.spool.settle, name, outcome)
        except RuntimeError:  # closed: the file stays, and is read again after connect()
            return
        moved.add_done_callback(partial(_report, name, outcome))


def _report(name: str, outcome: Outcome, moved: Future[None]) -> None:
    error = moved.exception()
    if error is not None:
        # The file stays where it is, in flight until the next connect() reads it again.
        log.error("files: cannot settle %s (%s): %s", name, outcome.value, error)
