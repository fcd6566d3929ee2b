"""What each route reports about itself: state, counters and the last error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from bridge import secrets


class RouteState(StrEnum):
    """Where a route is in its life."""

    STARTING = "starting"
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class RouteStats:
    """Counters of one route since the process started."""

    state: RouteState = RouteState.STARTING
    received: int = 0  # messages read from the source
    received_bytes: int = 0
    buffered: int = 0  # committed to the durable buffer
    delivered: int = 0  # confirmed by the destination
    delivered_bytes: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    looped: int = 0  # dropped by loop prevention
    retries: int = 0
    reconnects: int = 0
    source_connected: bool = False
    sink_connected: bool = False
    last_error: str | None = None
    last_error_at: float | None = None

    def error(self, exc: BaseException) -> None:
        """Remember `exc` as the last error (redacted)."""
        self.last_error = secrets.redact(f"{type(exc).__name__}: {exc}")
        self.last_error_at = time.time()

    def dead_letter(self, kind: str) -> None:
        """Count one dead-lettered message of reason `kind`."""
        self.dead_lettered[kind] = self.dead_lettered.get(kind, 0) + 1
