"""The config file's JSON Schema, generated from the model, for editors and CI linters."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from natsbridge.bridge.config.model import (
    CONNECTION_MODELS,
    SINK_MODELS,
    SOURCE_MODELS,
    ConfigFile,
    Model,
)

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of config version 1.

    `connections` values and a route's `from`/`to` depend on a connection's kind, which
    the loader resolves; the schema offers the alternatives of every kind instead.
    """
    groups = (CONNECTION_MODELS, SOURCE_MODELS, SINK_MODELS)
    models: list[type[Model]] = [ConfigFile, *(m for group in groups for m in group.values())]
    _, top = models_json_schema([(m, "validation") for m in models])
    defs = top["$defs"]
    root: dict[str, Any] = defs.pop("ConfigFile")

    def one_of(group: dict[str, type[Model]]) -> dict[str, Any]:
        return {"anyOf": [{"$ref": f"#/$defs/{m.__name__}"} for m in group.values()]}

    root["properties"]["connections"]["additionalProperties"] = one_of(CONNECTION_MODELS)
    route = defs["RouteSpec"]["properties"]
    route["from"] = {**one_of(SOURCE_MODELS), "description": "Where messages come from"}
    route["to"] = {**one_of(SINK_MODELS), "description": "Where messages go"}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "natsbridge config, version 1",
        **root,
        "$defs": defs,
    }
