"""``natsbridge run --dry-run``: what the routes would declare, and what the brokers have.

Connects to each connection the routes use, creates nothing, and prints one line per
resource: ``would create`` (with its settings), ``exists``, ``exists, differs:`` (each
setting, ours vs the broker's), ``missing`` (a route that must not create it), or
``unknown`` (the broker could not be asked, or the kind cannot say). Exit status 0, or 1
when a route would fail: a missing resource it must not create, a broker that could not
be asked, or, under ``bridge.strict_declarations``, a difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.declare import Declaration, Difference, Observed, differences
from natsbridge.bridge.kind import Side
from natsbridge.bridge.registry import load_connector


@dataclass(frozen=True)
class Planned:
    """One resource of one route, and what the broker said about it."""

    route: str
    declaration: Declaration
    state: str  # would create | exists | differs | missing | unknown
    detail: str = ""
    found: tuple[Difference, ...] = ()


def state_of(declaration: Declaration, observed: Observed) -> tuple[str, str, list[Difference]]:
    """(state, detail, differences) of `declaration` given what the broker has."""
    if observed is None:
        if declaration.create:
            return "would create", declaration.describe_settings(), []
        return "missing", f"{declaration.why_not_created}: the route will fail", []
    found = differences(declaration, observed)
    if found:
        return "differs", "; ".join(map(str, found)), found
    return "exists", "", []


async def plan(config: Config) -> list[Planned]:
    """Each route's declarations in config order, with their state (no resource created)."""
    wanted: list[tuple[str, str, Declaration]] = []  # (route, kind, declaration)
    for route in config.routes:
        sides: Sequence[tuple[Side, str]] = (("from", route.source_kind), ("to", route.sink_kind))
        for side, kind in sides:
            wanted += [
                (route.name, kind, d) for d in load_connector(kind).declarations(route, side)
            ]
    by_connection: dict[tuple[str, str], list[Declaration]] = {}
    for _, kind, declaration in wanted:
        group = by_connection.setdefault((kind, declaration.connection), [])
        if declaration not in group:
            group.append(declaration)
    seen: dict[tuple[str, str, str], Observed | BaseException] = {}
    for (kind, connection), declared in by_connection.items():
        try:
            observed = await load_connector(kind).observe(config.connections[connection], declared)
        except NotImplementedError:
            continue
        except Exception as exc:
            seen.update({d.identity: exc for d in declared})
            continue
        seen.update({d.identity: o for d, o in zip(declared, observed, strict=True)})
    planned = []
    for route_name, _, declaration in wanted:
        if declaration.identity not in seen:
            planned.append(Planned(route_name, declaration, "unknown", "this kind cannot say"))
            continue
        answer = seen[declaration.identity]
        if isinstance(answer, BaseException):
            planned.append(Planned(route_name, declaration, "unknown", f"cannot ask: {answer}"))
            continue
        state, detail, found = state_of(declaration, answer)
        planned.append(Planned(route_name, declaration, state, detail, tuple(found)))
    return planned


def failing(planned: Sequence[Planned], strict: bool) -> list[Planned]:
    """The lines that make the dry run exit 1."""
    bad = {"missing", "unknown"} | ({"differs"} if strict else set())
    return [p for p in planned if p.state in bad and "cannot say" not in p.detail]


def dry_run(config: Config, say: Callable[[str], None]) -> int:
    """Print the plan of `config` through `say`; the exit status."""
    planned = asyncio.run(plan(config))
    if not planned:
        say("dry run: the routes declare no resources")
        return 0
    rows = [("ROUTE", "CONNECTION", "RESOURCE", "STATE", "DETAIL")]
    rows += [
        (
            p.route,
            p.declaration.connection,
            f"{p.declaration.resource} {p.declaration.name}",
            p.state,
            p.detail,
        )
        for p in planned
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        say(f"{line}  {row[4]}".rstrip())
    strict = config.bridge.strict_declarations
    bad = failing(planned, strict)
    differing = sum(p.state == "differs" for p in planned)
    say(
        f"dry run: {len(planned)} resource{'' if len(planned) == 1 else 's'}, nothing created; "
        + (f"{len(bad)} would stop a route" if bad else "no route would fail")
        + (
            f" ({differing} differ, {'refused' if strict else 'warned'} as "
            f"bridge.strict_declarations is {str(strict).lower()})"
            if differing
            else ""
        )
    )
    return 1 if bad else 0
