"""The files sink: each message becomes one file, written atomically and durably.

A batch is written on the sink's worker thread (one thread: batches are written in call
order): each file to a ``.``-temporary, fsynced, renamed into place, then the directory is
fsynced once for the whole batch. Only then does `send_batch` return None for a message:
a power cut after that cannot lose it. The file name is the rendered `filename` template
(`Envelope.subject`); headers go to ``<name>.headers.json`` when there are any.

Results per message:

    None             written (or found already written with the same content: a redelivery)
    MappingError     the rendered name cannot be a file name here ('/', '..', too long …)
    MessageRejected  a different file of that name exists and `overwrite` is false
    ConnectionLost   the directory is gone: the runtime reconnects (which re-creates it)
    RetryableError   the write failed (disk full, I/O error, permissions): tried again later
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from natsbridge.sdk import (
    ConnectionLost,
    Envelope,
    MappingError,
    MessageRejected,
    PermanentError,
    RetryableError,
    Route,
)
from natsbridge_files.config import FilesConnection, FilesSink
from natsbridge_files.spool import sync_directory, write_file


class DirectorySink:
    """Sink writing into one directory of a `files` connection (see the module docstring)."""

    def __init__(self, route: Route, connection: FilesConnection) -> None:
        spec = route.sink
        assert isinstance(spec, FilesSink)
        self._route = route.name
        self._spec = spec
        self.directory = Path(connection.root, spec.directory)
        self._worker: ThreadPoolExecutor | None = None

    async def connect(self) -> None:
        """Check (or create) the directory."""
        await self.close()
        worker = ThreadPoolExecutor(1, thread_name_prefix=f"files-{self._route}")
        try:
            await asyncio.wrap_future(worker.submit(self._open))
        except FileNotFoundError as exc:
            worker.shutdown()
            raise PermanentError(f"files: {exc} (set `create: true` to create it)") from None
        except OSError as exc:
            worker.shutdown()
            raise ConnectionLost(f"files: cannot open {self.directory}: {exc}") from exc
        self._worker = worker

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Write `envelopes` in order; return once each is durable or has failed."""
        worker = self._worker
        if worker is None:
            return [ConnectionLost("files: sink not connected") for _ in envelopes]
        return await asyncio.wrap_future(worker.submit(self._write, list(envelopes)))

    async def close(self) -> None:
        """Wait for the batches being written, then stop. Idempotent."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.shutdown)

    def _open(self) -> None:
        if self._spec.create:
            self.directory.mkdir(parents=True, exist_ok=True)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"{self.directory} is not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.directory} is not writable")

    def _write(self, envelopes: list[Envelope]) -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for envelope in envelopes:
            name = envelope.subject
            try:
                write_file(
                    self.directory, name, envelope.payload, envelope.headers, self._spec.overwrite
                )
            except ValueError as exc:
                results.append(MappingError(f"files: {exc}"))
            except FileExistsError as exc:
                results.append(MessageRejected(f"files: {self.directory}/{exc}"))
            except FileNotFoundError as exc:  # the directory went away: connect() makes it
                results.append(ConnectionLost(f"files: cannot write {name!r}: {exc}"))
            except OSError as exc:  # disk full, I/O error: never the message's fault
                results.append(RetryableError(f"files: cannot write {name!r}: {exc}"))
            else:
                results.append(None)
        try:
            sync_directory(self.directory)
        except OSError as exc:  # the renames may not be durable: write them all again
            failed = RetryableError(f"files: cannot sync {self.directory}: {exc}")
            return [failed if result is None else result for result in results]
        return results
