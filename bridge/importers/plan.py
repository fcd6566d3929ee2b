"""What an importer found, as migrations to write: the model between reading and writing.

An importer (rabbitmq.py, kafka.py) turns what a legacy broker has into an `ImportPlan`:
connections, one `Migration` per flow, and notes in plain words for everything it could not
map. `names.py` makes the names valid and unique; `writer.py` renders the plan as YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from natsbridge.bridge.errors import BridgeError

NATS_CONNECTION = "nats"
NATS_URL = "${env:NATSBRIDGE_NATS_URL:-nats://127.0.0.1:4222}"


class Interpolated(str):
    """A value whose `${env:…}` references are meant: written as is, not escaped."""

    __slots__ = ()


@dataclass(frozen=True)
class StreamLimits:
    """What the JetStream stream must keep to hold what the legacy side keeps (None: no limit)."""

    max_msgs: int | None = None
    max_bytes: int | None = None
    max_age_ms: int | None = None

    def nats_cli_flags(self) -> str:
        """The `nats stream add` flags for these limits ('' when there are none)."""
        flags = []
        if self.max_msgs is not None:
            flags.append(f"--max-msgs {self.max_msgs}")
        if self.max_bytes is not None:
            flags.append(f"--max-bytes {self.max_bytes}")
        if self.max_age_ms is not None:
            flags.append(f"--max-age {duration(self.max_age_ms)}")
        return " ".join(flags)


def duration(ms: int) -> str:
    """Milliseconds in the largest whole unit: `7d`, `36h`, `90s`, `1500ms`."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass
class Migration:
    """One flow to migrate: its legacy endpoint, its NATS side and what to tell the reader."""

    name: str
    legacy: dict[str, Any]  # the endpoint keys of the legacy kind, without `connection`
    subject: str  # NATS subject template (legacy -> NATS)
    stream: str
    stream_subject: str  # what the stream captures: the subject, or its literal prefix + `.>`
    title: str  # one line: what this flow is on the legacy side
    notes: list[str] = field(default_factory=list)  # what could not be mapped, and why
    limits: StreamLimits = StreamLimits()
    back: dict[str, Any] | None = None  # sink keys for NATS -> legacy (phase cutover)


@dataclass
class ImportPlan:
    """A whole starting config: the legacy connection, the migrations and what was skipped."""

    command: str  # the command line that produced it, for the header comment
    legacy_name: str  # the legacy connection's name in the config ("rabbitmq", "kafka")
    legacy_connection: dict[str, Any]  # its keys, `kind` first
    migrations: list[Migration] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per thing not imported
    notes: list[str] = field(default_factory=list)  # about the whole import


class ImportFailed(BridgeError):
    """The legacy side could not be read, or it holds nothing to import (one line)."""
