"""The config file's JSON Schema, generated from the models of the installed kinds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic.json_schema import models_json_schema

from natsbridge.bridge.config.model import ConfigFile, Model
from natsbridge.bridge.migrate.model import MigrationSpec
from natsbridge.bridge.registry import all_kinds

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of config version 1, for the connector kinds installed.

    `connections` values and a route's `from`/`to` depend on a connection's kind, which
    the loader resolves; the schema offers the alternatives of every kind instead.
    """
    kinds = all_kinds().values()
    connections = [kind.connection_model for kind in kinds]
    sources = [kind.source_model for kind in kinds if kind.source_model is not None]
    sinks = [kind.sink_model for kind in kinds if kind.sink_model is not None]
    models: list[type[Model]] = [ConfigFile, MigrationSpec, *connections, *sources, *sinks]
    keys, top = models_json_schema([(m, "validation") for m in models])
    defs = top["$defs"]
    root: dict[str, Any] = defs.pop("ConfigFile")

    def one_of(group: Sequence[type[Model]]) -> dict[str, Any]:
        return {"anyOf": [keys[(m, "validation")] for m in group]}

    root["properties"]["connections"]["additionalProperties"] = one_of(connections)
    route = defs["RouteSpec"]["properties"]
    route["from"] = {**one_of(sources), "description": "Where messages come from"}
    route["to"] = {**one_of(sinks), "description": "Where messages go"}
    migration = defs["MigrationSpec"]["properties"]
    migration["legacy"] = {**one_of(sources), "description": migration["legacy"]["description"]}
    root["properties"]["migrations"]["items"] = keys[(MigrationSpec, "validation")]
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "natsbridge config, version 1",
        **root,
        "$defs": defs,
    }
