"""What must hold before a migration moves to its next phase, and what it measures to know.

* verify -> cutover: parity holds over the window (nothing missing, extra or different)
  and neither side has more than `verify.max_lag` messages waiting;
* cutover -> retire: the mirror keeps up (legacy lag at most `verify.max_lag`; the echoes of
  what NATS producers send keep it from 0 until retire stops ``NAME.to-legacy``);
* retire -> done: the legacy side drained: no message the mirror has not copied (its
  queue's depth / its consumer group's lag is 0).

* out of cutover backwards (rollback): ``NAME.to-legacy`` has delivered everything to the
  legacy side (its JetStream consumer has nothing pending), or what producers published
  on NATS would never reach the legacy consumers.

mirror -> verify needs nothing, nor do the other rollbacks. A measurement that fails
(a broker that does not answer) blocks like a failed check: `--force` passes anyway, and
is recorded. Parity and lag come from bridge.migrate.parity and bridge.migrate.lag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate.model import PHASES, TO_LEGACY, Migration, Phase, route_name

MEASURE_TIMEOUT_S = 60.0
LAG_SAMPLES = 20  # what advance and rollback take (status shows one)
LAG_SAMPLE_INTERVAL_S = 0.25


class LagLike(Protocol):
    """Messages waiting on each side (None: not known)."""

    @property
    def legacy(self) -> int | None: ...

    @property
    def nats(self) -> int | None: ...


class ParityLike(Protocol):
    """What a parity report says (bridge.migrate.parity.ParityReport)."""

    @property
    def ok(self) -> bool: ...

    @property
    def missing(self) -> list[Any]: ...

    @property
    def extra(self) -> list[Any]: ...

    @property
    def differ(self) -> list[Any]: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Measured:
    """What was measured for a step; a failed measurement is its error's text."""

    lag: LagLike | str | None = None
    parity: ParityLike | str | None = None


def needs(current: Phase, target: Phase) -> tuple[bool, bool]:
    """(lag, parity): what moving from `current` to `target` has to measure."""
    if _leaves_cutover_backwards(current, target):
        return True, False
    return target in (Phase.CUTOVER, Phase.RETIRE, Phase.DONE), target is Phase.CUTOVER


def _leaves_cutover_backwards(current: Phase, target: Phase) -> bool:
    return current is Phase.CUTOVER and PHASES.index(target) < PHASES.index(current)


def blockers(migration: Migration, target: Phase, measured: Measured) -> list[str]:
    """Why `migration` cannot move to `target` now ([] when it can)."""
    want_lag, want_parity = needs(migration.phase, target)
    found: list[str] = []
    if want_parity:
        found.extend(_parity_blockers(migration, measured.parity))
    lag = measured.lag
    if not want_lag:
        return found
    if lag is None or isinstance(lag, str):
        found.append(f"lag unknown: {lag or 'not measured'}")
    elif _leaves_cutover_backwards(migration.phase, target):
        if lag.nats is None or lag.nats > 0:
            found.append(
                f"{route_name(migration.name, TO_LEGACY)} has {_count(lag.nats)} messages "
                "not yet delivered to the legacy side (move producers back first)"
            )
    elif target is Phase.CUTOVER:
        limit = migration.spec.verify.max_lag
        for side, waiting in (("legacy", lag.legacy), ("nats", lag.nats)):
            if waiting is not None and waiting > limit:
                found.append(f"{side} lag {waiting} is above max_lag {limit}")
        if lag.legacy is None:
            found.append("legacy lag unknown")
    elif lag.legacy is None:
        found.append("legacy lag unknown")
    elif lag.legacy > (migration.spec.verify.max_lag if target is Phase.RETIRE else 0):
        # Into retire, NAME.to-legacy still writes what NATS producers send to the legacy
        # side, and the mirror reads those echoes back (and drops them): its lag settles
        # at a few messages, not 0, until retire stops NAME.to-legacy.
        shown = f" (max_lag {migration.spec.verify.max_lag})" if target is Phase.RETIRE else ""
        found.append(f"the legacy side still has {lag.legacy} messages not copied to NATS{shown}")
    return found


def _parity_blockers(migration: Migration, parity: ParityLike | str | None) -> list[str]:
    if parity is None or isinstance(parity, str):
        return [f"parity unknown: {parity or 'not measured'}"]
    if parity.ok:
        return []
    return [
        f"parity differs: {len(parity.missing)} missing, {len(parity.extra)} extra, "
        f"{len(parity.differ)} different (natsbridge migrate verify {migration.name})"
    ]


def _count(value: int | None) -> str:
    return "an unknown number of" if value is None else str(value)


Measure = Callable[[Config, Migration], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LowestLag:
    """The lowest lag each side showed over a few samples."""

    legacy: int | None
    nats: int | None


async def measure(
    config: Config,
    migration: Migration,
    lag: Measure,
    parity: Measure,
    *,
    want_lag: bool,
    want_parity: bool,
    lag_samples: int = 1,
) -> Measured:
    """Measure lag and parity as asked, each within MEASURE_TIMEOUT_S; failures become text.

    With `lag_samples` > 1 the lag is sampled that often (LAG_SAMPLE_INTERVAL_S apart,
    until both sides show 0) and each side's lowest count is kept. Echoes keep a lag from
    staying at 0 under traffic (the mirror reads back what NAME.to-legacy wrote, and the
    other way round); a side that was at 0 once, after the producers moved, has delivered
    everything they sent before.
    """
    results = await asyncio.gather(
        _lowest_lag(config, migration, lag, lag_samples) if want_lag else _nothing(),
        _bounded(parity(config, migration)) if want_parity else _nothing(),
    )
    return Measured(lag=results[0], parity=results[1])


async def _lowest_lag(
    config: Config, migration: Migration, lag: Measure, samples: int
) -> LagLike | str:
    first: LagLike | str = await _bounded(lag(config, migration))
    if samples <= 1 or isinstance(first, str):
        return first
    lowest = LowestLag(first.legacy, first.nats)
    for _ in range(samples - 1):
        if lowest.legacy == 0 and lowest.nats in (0, None):
            break
        await asyncio.sleep(LAG_SAMPLE_INTERVAL_S)
        sample = await _bounded(lag(config, migration))
        if isinstance(sample, str):
            return sample
        lowest = LowestLag(_lower(lowest.legacy, sample.legacy), _lower(lowest.nats, sample.nats))
    return lowest


def _lower(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


async def _nothing() -> None:
    return None


async def _bounded(measurement: Awaitable[Any]) -> Any:
    try:
        return await asyncio.wait_for(measurement, MEASURE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {MEASURE_TIMEOUT_S:.0f}s"
    except Exception as exc:  # a broker error of any client library: the step is blocked
        return f"{type(exc).__name__}: {exc}"
