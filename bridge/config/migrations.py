"""The `migrations:` section of a config file: each migration checked, its routes derived.

A migration runs the routes of its live phase (bridge.migrate.state; the config's `phase:`
is where it starts). They are checked like written routes, and a problem in one is
reported at the migration's own keys (`migrations[0].nats.subject`, `…back.routing_key`).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from natsbridge.bridge.config.model import BridgeSettings, Model
from natsbridge.bridge.config.source import YamlPath, format_path
from natsbridge.bridge.migrate.derive import derive_routes, file_path
from natsbridge.bridge.migrate.model import TO_NATS, Migration, MigrationSpec, Phase
from natsbridge.bridge.migrate.state import StateError, read_phases

if TYPE_CHECKING:  # the loader imports this module
    from natsbridge.bridge.config.loader import Route, _Checker


def check_migrations(
    checker: _Checker,
    raw: list[Any],
    bridge: BridgeSettings | None,
    connections: dict[str, Model],
    routes: list[Route],
) -> list[Migration]:
    """Each migration, with the routes of its live phase appended to `routes`."""
    phases: dict[str, Phase] = {}
    if bridge is not None:
        try:
            phases = read_phases(bridge.data_dir)
        except StateError as exc:
            checker.fail(("bridge", "data_dir"), str(exc))
    phases.update(checker.phases)
    taken = {route.name: format_path(("routes", i)) for i, route in enumerate(routes)}
    migrations = []
    for index, body in enumerate(raw):
        where: YamlPath = ("migrations", index)
        spec = typing.cast(MigrationSpec | None, checker.validate(MigrationSpec, body, where))
        if spec is None:
            continue
        phase = phases.get(spec.name, spec.phase)
        checked = _check_migration(checker, spec, phase, where, connections)
        if checked is None:
            continue
        migration, derived = checked
        for route in derived:
            if route.name in taken:
                checker.fail((*where, "name"), f"route '{route.name}' is also {taken[route.name]}")
            taken[route.name] = format_path(where)
        routes.extend(derived)
        migrations.append(migration)
    return migrations


def _check_migration(
    checker: _Checker,
    spec: MigrationSpec,
    phase: Phase,
    where: YamlPath,
    connections: dict[str, Model],
) -> tuple[Migration, list[Route]] | None:
    """The migration and the routes of `phase`, checked where the file writes them."""
    name = checker.connection_kind(spec.legacy, (*where, "legacy"), connections)
    as_written = checker.translate
    checker.translate = file_path(where, TO_NATS)
    try:
        legacy = checker.check_endpoint(name, spec.legacy, (*where, "from")) if name else None
    finally:
        checker.translate = as_written
    if legacy is None:
        return None
    endpoint, kind = legacy
    derived = []
    for direction, body in derive_routes(spec, phase, kind.writes_back(endpoint)):
        checker.translate = file_path(where, direction)
        try:
            derived.append(checker.check_route(body, where, connections))
        finally:
            checker.translate = as_written
    if None in derived:
        return None
    routes = [route for route in derived if route is not None]
    names = tuple(route.name for route in routes)
    return Migration(spec, endpoint, kind.name, phase, names), routes
