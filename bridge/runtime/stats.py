"""What each route reports about itself: state, counters and the last error."""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from enum import StrEnum

from natsbridge.bridge import secrets


class RouteState(StrEnum):
    """Where a route is in its life."""

    STARTING = "starting"
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    PAUSED = "paused"  # the buffer takes no writes (full, or its disk is): source held back
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds of the end-to-end latency histogram, in seconds (+Inf is implied)."""
RATE_WINDOW_S = 60.0
"""The window of the average rates; the instantaneous ones span the last sample (~1 s)."""


@dataclass(slots=True)
class Latency:
    """A cumulative-at-read histogram of end-to-end latency (source timestamp to confirm)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one message that took `seconds`."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total += seconds


@dataclass(slots=True)
class RouteStats:
    """Counters of one route since the process started."""

    state: RouteState = RouteState.STARTING
    received: int = 0  # messages read from the source
    received_bytes: int = 0
    buffered: int = 0  # committed to the durable buffer
    acked: int = 0  # source messages acknowledged
    delivered: int = 0  # confirmed by the destination
    delivered_bytes: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    looped: int = 0  # dropped by loop prevention
    dropped: int = 0  # at_most_once messages the sink did not take
    retries: int = 0
    reconnects: int = 0
    redelivered: int = 0  # handed out by the buffer again (after a restart)
    in_flight: int = 0  # taken from the buffer, not yet confirmed
    source_connected: bool = False
    sink_connected: bool = False
    last_error: str | None = None
    last_error_at: float | None = None
    paused: bool = False  # by an operator (`POST /api/routes/NAME/pause`): source not read
    started_at: float | None = None  # Unix time this route (re)started: a reload shows here
    latency: Latency = field(default_factory=Latency)
    # Refreshed by the bridge's sampler about once a second:
    buffer_depth: int = 0
    buffer_oldest_age: float | None = None
    rate_in: float = 0.0  # messages/s since the previous sample
    rate_out: float = 0.0
    rate_in_avg: float = 0.0  # messages/s over the last RATE_WINDOW_S
    rate_out_avg: float = 0.0
    buffer_bytes: int = 0
    _samples: list[tuple[float, int, int]] = field(default_factory=list)

    def sample(self, now: float) -> None:
        """Record the counters at `now`; update the rates since the last sample and the window.

        A trailing average alone hides a burst (330/s for a second reads as 33/s over ten),
        so both are kept: the instantaneous rate and the average over RATE_WINDOW_S.
        """
        samples = self._samples
        samples.append((now, self.received, self.delivered))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_S:
            samples.pop(0)
        if len(samples) < 2:
            return
        self.rate_in, self.rate_out = _rates(samples[-2], samples[-1])
        self.rate_in_avg, self.rate_out_avg = _rates(samples[0], samples[-1])

    def error(self, exc: BaseException) -> None:
        """Remember `exc` as the last error (redacted)."""
        self.last_error = secrets.redact(f"{type(exc).__name__}: {exc}")
        self.last_error_at = time.time()

    def dead_letter(self, kind: str) -> None:
        """Count one dead-lettered message of reason `kind`."""
        self.dead_lettered[kind] = self.dead_lettered.get(kind, 0) + 1


def _rates(then: tuple[float, int, int], now: tuple[float, int, int]) -> tuple[float, float]:
    """Messages per second in and out between two samples (0 when no time passed)."""
    seconds = now[0] - then[0]
    if seconds <= 0:
        return 0.0, 0.0
    return (now[1] - then[1]) / seconds, (now[2] - then[2]) / seconds
