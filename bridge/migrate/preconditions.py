"""What must hold before a migration moves to its next phase, and what it measures to know.

* verify -> cutover: parity holds over the window (nothing missing, extra or different)
  and neither side has more than `verify.max_lag` messages waiting;
* cutover -> retire and retire -> done: the legacy side has no unconsumed message
  (queue depth 0 / consumer-group lag 0).

mirror -> verify needs nothing, and a rollback is always allowed. A measurement that fails
(a broker that does not answer) blocks like a failed check: `--force` passes anyway, and
is recorded. Parity and lag come from bridge.migrate.parity and bridge.migrate.lag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate.model import Migration, Phase

MEASURE_TIMEOUT_S = 60.0


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


def needs(target: Phase) -> tuple[bool, bool]:
    """(lag, parity): what moving to `target` has to measure."""
    return target in (Phase.CUTOVER, Phase.RETIRE, Phase.DONE), target is Phase.CUTOVER


def blockers(migration: Migration, target: Phase, measured: Measured) -> list[str]:
    """Why `migration` cannot move to `target` now ([] when it can)."""
    want_lag, want_parity = needs(target)
    found: list[str] = []
    if want_parity:
        parity = measured.parity
        if parity is None or isinstance(parity, str):
            found.append(f"parity unknown: {parity or 'not measured'}")
        elif not parity.ok:
            found.append(
                f"parity differs: {len(parity.missing)} missing, {len(parity.extra)} extra, "
                f"{len(parity.differ)} different (natsbridge migrate verify {migration.name})"
            )
    if want_lag:
        lag = measured.lag
        if lag is None or isinstance(lag, str):
            found.append(f"lag unknown: {lag or 'not measured'}")
        elif target is Phase.CUTOVER:
            limit = migration.spec.verify.max_lag
            for side, waiting in (("legacy", lag.legacy), ("nats", lag.nats)):
                if waiting is None:
                    found.append(f"{side} lag unknown")
                elif waiting > limit:
                    found.append(f"{side} lag {waiting} is above max_lag {limit}")
        elif lag.legacy is None:
            found.append("legacy lag unknown")
        elif lag.legacy > 0:
            found.append(f"the legacy side still has {lag.legacy} unconsumed messages")
    return found


Measure = Callable[[Config, Migration], Awaitable[Any]]


async def measure(
    config: Config,
    migration: Migration,
    lag: Measure,
    parity: Measure,
    *,
    want_lag: bool,
    want_parity: bool,
) -> Measured:
    """Measure lag and parity as asked, each within MEASURE_TIMEOUT_S; failures become text."""
    results = await asyncio.gather(
        _bounded(lag(config, migration)) if want_lag else _nothing(),
        _bounded(parity(config, migration)) if want_parity else _nothing(),
    )
    return Measured(lag=results[0], parity=results[1])


async def _nothing() -> None:
    return None


async def _bounded(measurement: Awaitable[Any]) -> Any:
    try:
        return await asyncio.wait_for(measurement, MEASURE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {MEASURE_TIMEOUT_S:.0f}s"
    except Exception as exc:  # a broker error of any client library: the step is blocked
        return f"{type(exc).__name__}: {exc}"
