"""The config file's JSON Schema, generated from the models of the installed kinds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic.json_schema import models_json_schema

from natsbridge.bridge.config.model import ConfigFile, Model
from natsbridge.bridge.migrate.model import MigrationSpec
from natsbridge.bridge.registry import all_kinds

if TYPE_CHECKING:  # bridge.kind imports the config
    from natsbridge.bridge.kind import ConnectorKind

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(kinds: Iterable[ConnectorKind] | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12) of config version 1, for `kinds` (default: every one installed).

    `connections` values and a route's `from`/`to` depend on a connection's kind, which
    the loader resolves; the schema offers the alternatives of every kind instead.
    """
    kinds = list(all_kinds().values() if kinds is None else kinds)
    connections = [kind.connection_model for kind in kinds]
    sources = [kind.source_model for kind in kinds if kind.source_model is not None]
    sinks = [kind.sink_model for kind in kinds if kind.sink_model is not None]
    models: list[type[Model]] = [ConfigFile, MigrationSpec, *connections, *sources, *sinks]
    keys, top = models_json_schema([(m, "validation") for m in models])
    defs = top["$defs"]
    root: dict[str, Any] = defs.pop("ConfigFile")

    def one_of(group: Sequence[type[Model]]) -> dict[str, Any]:
        return {"anyOf": [keys[(m, "validation")] for m in group]}

    # A connection named as the pattern allows is one of the kinds' connections; any other
    # name is refused (patternProperties, not additionalProperties, applies to valid names).
    named = root["properties"]["connections"]
    named["patternProperties"] = dict.fromkeys(named["patternProperties"], one_of(connections))
    named["additionalProperties"] = False
    route = defs["RouteSpec"]["properties"]
    route["from"] = {**one_of(sources), "description": "Where messages come from"}
    route["to"] = {**one_of(sinks), "description": "Where messages go"}
    route["dead_letters"] = {
        "anyOf": [one_of(sinks), {"type": "null"}],
        "description": route["dead_letters"]["description"],
    }
    migration = defs["MigrationSpec"]["properties"]
    migration["legacy"] = {**one_of(sources), "description": migration["legacy"]["description"]}
    root["properties"]["migrations"]["items"] = keys[(MigrationSpec, "validation")]
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "natsbridge config, version 1",
        **root,
        "$defs": defs,
    }
