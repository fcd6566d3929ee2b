"""The live phase of each migration and the history of its changes, under `bridge.data_dir`.

``<data_dir>/migrations/state.json`` holds ``{"version": 1, "migrations": {NAME: {"phase",
"since"}}}``; it is replaced whole (write to a temporary file, fsync, rename, fsync the
directory), so it is either the old or the new state after a kill -9, never half of one.
``parity.json`` keeps the last parity measured per migration, for the metrics.
``history.jsonl`` gets one JSON line per change (time, migration, from, to, who, forced,
reason), appended and fsynced after the state is written: a crash between the two loses
the line, never the phase. A lock file serialises concurrent `migrate` commands.
The state wins over a migration's `phase:` in the config, which is only where it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from natsbridge.bridge.errors import BridgeError
from natsbridge.bridge.migrate.model import Phase

STATE_VERSION = 1
STATE_FILE = "state.json"
PARITY_FILE = "parity.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "lock"


class StateError(BridgeError):
    """The migration state cannot be read or written; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Change:
    """One phase change, as recorded in history.jsonl."""

    time: float
    migration: str
    from_: str
    to: str
    who: str  # "cli" or "api"
    forced: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The history line's fields (`from`, not `from_`)."""
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data


def state_dir(data_dir: str | Path) -> Path:
    """Where the migration state of a bridge lives."""
    return Path(data_dir) / "migrations"


def read_phases(data_dir: str | Path) -> dict[str, Phase]:
    """The recorded live phase of each migration ({} before the first change)."""
    return {name: Phase(entry["phase"]) for name, entry in read_state(data_dir).items()}


def read_state(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Each migration's recorded ``{"phase", "since"}`` (since: Unix time of the change)."""
    path = state_dir(data_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{path}: cannot read the migration state: {exc.strerror}") from None
    try:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"expected version {STATE_VERSION}, found {data.get('version')!r}")
        entries = data["migrations"]
        for entry in entries.values():
            Phase(entry["phase"])
            float(entry["since"])
        return dict(entries)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateError(
            f"{path}: damaged migration state ({exc}); restore it or remove it"
        ) from None


def history(data_dir: str | Path, migration: str | None = None) -> list[dict[str, Any]]:
    """The recorded changes, oldest first (of one migration if named); bad lines skipped."""
    path = state_dir(data_dir) / HISTORY_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"{path}: cannot read the migration history: {exc.strerror}") from None
    changes = []
    for line in lines:
        try:
            change = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-append
        if isinstance(change, dict) and migration in (None, change.get("migration")):
            changes.append(change)
    return changes


@contextlib.contextmanager
def locked(data_dir: str | Path) -> Iterator[None]:
    """Hold the migration state's lock (other `migrate` commands wait)."""
    directory = state_dir(data_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / LOCK_FILE, "a")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise StateError(
            f"{directory}: cannot create the migration state: {exc.strerror}"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def record(
    data_dir: str | Path,
    migration: str,
    from_: Phase,
    to: Phase,
    *,
    who: str,
    forced: bool = False,
    reason: str = "",
) -> Change:
    """Make `to` the live phase of `migration` and append the change to the history.

    Call it holding `locked(data_dir)`, after checking that `from_` is still the live phase.
    """
    directory = state_dir(data_dir)
    change = Change(time.time(), migration, from_.value, to.value, who, forced, reason)
    try:
        current = read_state(data_dir)  # refuses a damaged file rather than overwrite it
        current[migration] = {"phase": to.value, "since": change.time}
        _replace(directory / STATE_FILE, {"version": STATE_VERSION, "migrations": current})
        with open(directory / HISTORY_FILE, "a", encoding="utf-8") as out:
            out.write(json.dumps(change.to_json(), sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise StateError(f"{directory}: cannot record the phase change: {exc.strerror}") from None
    return change


def _replace(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically and durably."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remember_parity(data_dir: str | Path, migration: str, ok: bool) -> None:
    """Keep the last parity measured for `migration` (best effort: metrics only)."""
    path = state_dir(data_dir) / PARITY_FILE
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        known = last_parity(data_dir)
        known[migration] = {"ok": ok, "time": time.time()}
        _replace(path, known)


def last_parity(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """migration -> {"ok", "time"} of the last parity measured ({} if none or unreadable)."""
    try:
        data = json.loads((state_dir(data_dir) / PARITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
