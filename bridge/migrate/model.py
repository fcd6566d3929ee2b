"""The `migrations:` config section: one entry per flow moving from a legacy broker to NATS.

An entry names the legacy side (an endpoint of the legacy kind, as a route's `from:`),
the NATS side (a subject template and a JetStream stream) and the phase it starts in.
The phases run mirror -> verify -> cutover -> retire -> done; bridge.migrate.derive
turns the live phase into ordinary routes, bridge.migrate.state keeps the live phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from natsbridge.bridge.config.model import (
    NAME_PATTERN,
    Delivery,
    Endpoint,
    JsName,
    Model,
    Name,
    Template,
)
from natsbridge.bridge.config.units import Seconds

TO_NATS = "to-nats"
TO_LEGACY = "to-legacy"
ROUTE_SUFFIX_MAX = len(f".{TO_LEGACY}")
MigrationName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64 - ROUTE_SUFFIX_MAX)]


class Phase(StrEnum):
    """Where a migration stands; each step is reversible (`natsbridge migrate rollback`)."""

    MIRROR = "mirror"  # legacy is the source of truth; a tap copies it into JetStream
    VERIFY = "verify"  # mirror, and parity is measured on both sides
    CUTOVER = "cutover"  # producers move to NATS: NATS -> legacy keeps legacy consumers fed
    RETIRE = "retire"  # consumers have moved: NATS -> legacy stops, legacy drains
    DONE = "done"  # legacy drained: the bridge carries nothing for this flow any more


PHASES: tuple[Phase, ...] = tuple(Phase)


def next_phase(phase: Phase) -> Phase | None:
    """The phase `advance` moves to, or None after the last."""
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else None


def previous_phase(phase: Phase) -> Phase | None:
    """The phase `rollback` moves to, or None before the first."""
    index = PHASES.index(phase)
    return PHASES[index - 1] if index > 0 else None


class MigrationNats(Model):
    """The NATS side of a migration."""

    connection: Name
    subject: Template = Field(description="Legacy -> NATS subject template")
    stream: JsName = Field(description="JetStream stream (created if missing)")
    durable: JsName | None = Field(
        None, description="Consumer of NATS -> legacy in cutover; default natsbridge-<name>"
    )


class MigrationVerify(Model):
    """What `verify` compares and what blocks `verify -> cutover`."""

    window: Seconds = Field(600.0, gt=0, description="Parity window")
    max_lag: int = Field(100, ge=0, description="Most messages waiting on either side")
    headers: list[str] = Field(default_factory=list, description="Headers hashed with the payload")


class MigrationSpec(Model):
    """A migration as written; `legacy` and `back` are checked against the legacy kind."""

    name: MigrationName
    phase: Phase = Field(
        Phase.MIRROR, description="The starting phase; the live phase is kept in data_dir"
    )
    legacy: dict[str, Any] = Field(description="The legacy endpoint, as a route's `from:`")
    nats: MigrationNats
    back: dict[str, Any] | None = Field(
        None, description="Sink fields for NATS -> legacy (cutover), as a route's `to:`"
    )
    verify: MigrationVerify = MigrationVerify()
    delivery: Delivery = Delivery.AT_LEAST_ONCE


@dataclass(frozen=True, slots=True)
class Migration:
    """A checked migration: its spec, typed legacy endpoint and kind, and live phase."""

    spec: MigrationSpec
    legacy: Endpoint
    legacy_kind: str
    phase: Phase
    route_names: tuple[str, ...]  # the routes derived for `phase`

    @property
    def name(self) -> str:
        """The migration's unique name."""
        return self.spec.name


def route_name(migration: str, direction: str) -> str:
    """The stable name of a derived route: ``orders.to-nats``, ``orders.to-legacy``."""
    return f"{migration}.{direction}"
