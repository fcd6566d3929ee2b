"""Connector registry: kind name -> connector, resolved lazily.

Built-in connectors are import paths, imported only when a route uses them, so that
importing `bridge` never imports pika, kafka-python or stomp.py. Third-party packages
add connectors through the `natsbridge.connectors` entry-point group:

    [project.entry-points."natsbridge.connectors"]
    mqtt = "natsbridge_mqtt:connector"
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import cast

from natsbridge.bridge.connector import Connector
from natsbridge.bridge.errors import ConfigError

ENTRY_POINT_GROUP = "natsbridge.connectors"


def available() -> dict[str, str]:
    """Every known connector kind and the `module:attribute` that provides it."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_connector(kind: str) -> Connector:
    """The connector for `kind`; a ConfigError with a suggestion when there is none."""
    kinds = available()
    target = kinds.get(kind)
    if target is None:
        close = difflib.get_close_matches(kind, list(kinds), n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise ConfigError([f"no connector for kind '{kind}'{hint} (known: {', '.join(kinds)})"])
    module_name, _, attribute = target.partition(":")
    return cast(Connector, getattr(importlib.import_module(module_name), attribute))
