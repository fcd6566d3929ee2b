"""The directory side of the files connector: plain blocking file I/O, no asyncio.

A *spool* is a directory that a source reads: each regular file whose name matches the
source's pattern is one message. Names starting with ``.`` are never messages (writers,
this connector's sink included, write there first and rename into place), nor are
header sidecars (``<name>.headers.json``). A message leaves the directory only when it is
settled: acked into ``done/``, rejected into ``rejected/``; a retryable nack leaves it
where it is, to be read again.

Everything here runs on ONE worker thread per source or sink (see source.py and sink.py),
so the in-flight bookkeeping needs no lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

SIDECAR = ".headers.json"
"""Suffix of a message's header file: ``report.csv`` has ``report.csv.headers.json``."""
DONE = "done"
REJECTED = "rejected"
NAME_MAX = 255 - len(f".{SIDECAR}.tmp")
"""Longest message file name, in bytes: its sidecar's temporary file still fits in the
255 bytes of ext4, xfs, btrfs and tmpfs."""


class Outcome(Enum):
    """How one message was settled."""

    DONE = "done"  # acked: moved to done/
    REJECTED = "rejected"  # refused for good: moved to rejected/
    RETRY = "retry"  # nacked: left in place, read again


class UnreadableFile(Exception):
    """A file (or its sidecar) that cannot become a message; `name` says which."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"{name}: {reason}")


@dataclass(slots=True)
class Message:
    """One file read from a spool: its payload, its headers, and an id stable across reads."""

    name: str
    payload: bytes
    headers: dict[str, list[str]]
    msg_id: str
    error: UnreadableFile | None = None


def check_name(name: str) -> None:
    """Raise ValueError unless `name` can be a message file's name (see the module docstring)."""
    if not name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    if "/" in name or "\0" in name:
        raise ValueError(f"{name!r}: a file name has no '/' or NUL")
    if name.startswith("."):
        raise ValueError(f"{name!r}: names starting with '.' are reserved for files being written")
    if name.endswith(SIDECAR):
        raise ValueError(f"{name!r}: names ending with {SIDECAR!r} are header sidecars")
    if len(os.fsencode(name)) > NAME_MAX:
        raise ValueError(f"{name[:40]!r}…: longer than {NAME_MAX} bytes")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as a regex: ``*`` any text (a capture group), ``?`` one character, the rest
    literal (``[`` too)."""
    parts = [
        "(.*?)" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    ]
    return re.compile("".join(parts), re.DOTALL)


def read_headers(path: Path) -> dict[str, list[str]]:
    """The headers in sidecar `path` (a JSON object of name -> string or list of strings)."""
    document = json.loads(path.read_bytes())
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object of header names")
    headers: dict[str, list[str]] = {}
    for name, value in document.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"header {name!r}: expected a string or a list of strings")
        headers[name] = values
    return headers


@dataclass
class Spool:
    """A directory read as a queue: `take` hands out files, `settle` moves them away."""

    directory: Path
    pattern: str = "*"
    max_size: int = 64 * 1024**2
    in_flight: set[str] = field(default_factory=set)  # read, not settled yet

    def __post_init__(self) -> None:
        self._matches = glob_regex(self.pattern).fullmatch

    def open(self, create: bool) -> None:
        """Check the directory (creating it if `create`) and its done/ and rejected/ folders.

        Forgets what was in flight: every unsettled file is read again (a reconnect).
        """
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"{self.directory} is not a directory")
        for sub in (DONE, REJECTED):
            (self.directory / sub).mkdir(exist_ok=True)
        self.in_flight.clear()

    def waiting(self) -> list[str]:
        """Names of the files waiting to be read, oldest first (by mtime, then name)."""
        found: list[tuple[int, str]] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if (
                    name in self.in_flight
                    or name.startswith(".")
                    or name.endswith(SIDECAR)
                    or self._matches(name) is None
                    or not entry.is_file(follow_symlinks=False)
                ):
                    continue
                with contextlib.suppress(FileNotFoundError):  # settled meanwhile
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, name))
        return [name for _, name in sorted(found)]

    def take(self, limit: int) -> list[Message]:
        """Read up to `limit` waiting files; they stay in flight until settled."""
        messages: list[Message] = []
        for name in self.waiting()[:limit]:
            message = self._read(name)
            if message is not None:
                self.in_flight.add(name)
                messages.append(message)
        return messages

    def _read(self, name: str) -> Message | None:
        path = self.directory / name
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                msg_id = f"{name}@{stat.st_mtime_ns}"  # the same file read again: the same id
                if stat.st_size > self.max_size:
                    error = UnreadableFile(name, f"{stat.st_size} bytes, over {self.max_size}")
                    return Message(name, b"", {}, msg_id, error)
                payload = file.read()
        except FileNotFoundError:
            return None  # taken away since the scan: not ours any more
        sidecar = self.directory / (name + SIDECAR)
        try:
            headers = read_headers(sidecar) if sidecar.exists() else {}
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            return Message(name, payload, {}, msg_id, UnreadableFile(name + SIDECAR, str(exc)))
        return Message(name, payload, headers, msg_id)

    def settle(self, name: str, outcome: Outcome) -> None:
        """Settle file `name`: move it (and its sidecar) away, or release it to be read again.

        Idempotent: a file already moved (settled through an earlier read) is left alone.
        """
        if outcome is Outcome.RETRY:
            self.in_flight.discard(name)
            return
        target = self.directory / outcome.value
        # The payload first: a crash between the two moves leaves a stale sidecar behind,
        # never a message without its headers.
        for moved in (name, name + SIDECAR):
            try:
                os.replace(self.directory / moved, target / moved)
            except FileNotFoundError:
                if (self.directory / moved).exists():
                    raise  # done/ or rejected/ is gone: the file stays, in flight
        self.in_flight.discard(name)


def write_file(
    directory: Path, name: str, payload: bytes, headers: dict[str, list[str]], overwrite: bool
) -> bool:
    """Write message `name` into `directory` atomically; False if it is there already.

    The payload goes to a ``.``-file, is fsynced, then renamed into place, so a reader
    never sees half a file; the sidecar (when there are headers) goes first the same way.
    Without `overwrite`, an existing file with the same content is this message written
    before (a redelivery): nothing is written; FileExistsError when its content differs.
    The caller fsyncs the directory (`sync_directory`) to make the renames durable.
    """
    check_name(name)
    path = directory / name
    if not overwrite and path.exists():
        if path.read_bytes() == payload:
            return False
        raise FileExistsError(f"{name} exists with other content")
    sidecar = directory / (name + SIDECAR)
    if headers:
        _write_atomically(sidecar, json.dumps(headers, ensure_ascii=False).encode())
    else:
        with contextlib.suppress(FileNotFoundError):
            sidecar.unlink()  # an overwritten message's old headers
    _write_atomically(path, payload)
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def sync_directory(directory: Path) -> None:
    """fsync `directory`: the renames made in it survive a power cut once this returns."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
