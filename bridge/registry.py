"""Connector registry: kind name -> its `ConnectorKind`, found through entry points.

Every connector, built-in or not, is an entry point of the ``natsbridge.connectors``
group whose target is its kind object (bridge.kind)::

    [project.entry-points."natsbridge.connectors"]
    mqtt = "natsbridge_mqtt:connector"

A kind is imported the first time the config names it; importing it never imports its
broker's client library (that happens when a route opens a source or sink), so the
config of any route validates without the driver installed.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from natsbridge.bridge.errors import ConfigError

if TYPE_CHECKING:  # bridge.kind imports the config, which imports this registry
    from natsbridge.bridge.kind import ConnectorKind

ENTRY_POINT_GROUP = "natsbridge.connectors"

_loaded: dict[str, ConnectorKind] = {}  # by entry point target, "module:attribute"


@cache
def available() -> dict[str, str]:
    """Every installed connector kind and the `module:attribute` that provides it.

    Read once per process (scanning the installed distributions takes milliseconds);
    `available.cache_clear()` reads them again.
    """
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` for the choice closest to `word`, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def load_connector(kind: str) -> ConnectorKind:
    """The connector kind `kind`; a ConfigError with a suggestion when there is none."""
    kinds = available()
    target = kinds.get(kind)
    if target is None:
        hint = did_you_mean(kind, kinds)
        raise ConfigError([f"no connector for kind '{kind}'{hint} (known: {', '.join(kinds)})"])
    loaded = _loaded.get(target)
    if loaded is None:
        from natsbridge.bridge.kind import ConnectorKind

        module_name, _, attribute = target.partition(":")
        try:
            loaded = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError([f"kind '{kind}': cannot load {target}: {exc}"]) from None
        if not isinstance(loaded, ConnectorKind) or loaded.name != kind:
            raise ConfigError(
                [f"kind '{kind}': {target} is not a ConnectorKind named '{kind}': {loaded!r}"]
            )
        _loaded[target] = loaded
    return loaded


def all_kinds() -> dict[str, ConnectorKind]:
    """Every installed kind, loaded (for the JSON Schema and for listing alternatives)."""
    return {name: load_connector(name) for name in available()}
