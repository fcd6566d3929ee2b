"""Live reconfiguration: what a new config changes in a running bridge.

A reload (SIGHUP, `POST /api/reload`) reads the config file again. When it is invalid,
nothing changes. Otherwise the routes are compared by name:

* **added** — in the new file only: started;
* **removed** — in the old file only: stopped with a drain (as on SIGTERM);
* **changed** — the route's own settings, a connection it uses, or a `bridge` setting
  that routes read (`id`, `hop_limit`, `buffer`) differ: drained and started again
  with the new settings, on the same buffer;
* **unchanged** — everything else keeps running untouched, counters and all.

`bridge.drain_timeout` applies at once. `bridge.data_dir` and `bridge.admin` belong
to the process (the open buffer, the bound port): a new value is refused, positioned
like any config error, and applies on the next start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from natsbridge.bridge.config.loader import Config, Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.config.source import read_document

LIVE_BRIDGE_SETTINGS = frozenset({"drain_timeout"})
"""`bridge` keys a reload applies without touching any route."""
FIXED_BRIDGE_SETTINGS = ("data_dir", "admin")
"""`bridge` keys that only a restart can change."""


@dataclass(frozen=True, slots=True)
class RouteDiff:
    """Route names by what a new config does to them, each list in config order."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def diff_routes(old: Config, new: Config) -> RouteDiff:
    """Compare the routes of `old` and `new` by name (see the module docstring)."""
    before = {route.name: route for route in old.routes}
    after = {route.name: route for route in new.routes}
    bridge_changed = _route_settings(old.bridge) != _route_settings(new.bridge)
    diff = RouteDiff(removed=[name for name in before if name not in after])
    for name, route in after.items():
        if name not in before:
            diff.added.append(name)
        elif bridge_changed or _differs(before[name], old, route, new):
            diff.changed.append(name)
        else:
            diff.unchanged.append(name)
    return diff


def _route_settings(bridge: BridgeSettings) -> dict[str, Any]:
    """The `bridge` settings a route reads (everything not live and not fixed)."""
    return bridge.model_dump(exclude={*LIVE_BRIDGE_SETTINGS, *FIXED_BRIDGE_SETTINGS})


def _differs(old: Route, old_config: Config, new: Route, new_config: Config) -> bool:
    if old.spec != new.spec:
        return True
    # A connection's model compares its secrets by value: a new password restarts the
    # routes that use it.
    return any(
        old_config.connections.get(name) != new_config.connections.get(name)
        for name in {old.source.connection, old.sink.connection}
    )


def fixed_setting_problems(running: Config, new: Config) -> list[str]:
    """One positioned problem per restart-only `bridge` setting that `new` changes."""
    changed = [
        key
        for key in FIXED_BRIDGE_SETTINGS
        if getattr(running.bridge, key) != getattr(new.bridge, key)
    ]
    if not changed:
        return []
    try:
        marks = read_document(new.path)
    except Exception:  # changed again since it was loaded: say it without a position
        marks = None
    problems = []
    for key in changed:
        mark = marks.mark(("bridge", key)) if marks is not None else None
        where = f"{new.path}:{mark.line}:{mark.column}" if mark else new.path
        problems.append(
            f"{where}: bridge.{key}: cannot change in a running bridge; "
            "restart it to apply (the running value stays)"
        )
    return problems
