"""Generate the chart's values.schema.json from its values.yaml and natsbridge's config schema.

    python deploy/helm/values_schema.py          # rewrite natsbridge/values.schema.json
    python deploy/helm/values_schema.py --check  # exit 1 when the committed file is stale

Each value's type comes from its default in values.yaml and its description from the
comment block above it; objects with defaults refuse unknown keys (a typo in a value is an
error at `helm install`, not a silently ignored setting). SHAPES names the values whose
default does not tell their type: Kubernetes objects passed through as written, lists of
items, nullable numbers, enumerations.

`config` gets natsbridge's own JSON Schema (`natsbridge schema`) for the connector kinds
natsbridge ships, with two changes for a file that is read after `${env:…}`/`${file:…}`
interpolation: a number, boolean or constrained string may be such a reference, and a
secret (a password or token field) must be one, so that no credential is ever written
into values or the ConfigMap. An image with a third-party connector kind installs with
`helm install --skip-schema-validation`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from natsbridge.bridge.config.schema import SCHEMA_DIALECT, json_schema
from natsbridge.bridge.registry import ENTRY_POINT_GROUP, load_connector

CHART = Path(__file__).resolve().parent / "natsbridge"

REFERENCE = {"type": "string", "pattern": r"\$\{(env|file):"}
"""A string holding an `${env:…}` or `${file:…}` reference: its value is known in the pod."""
SECRET_REFERENCE = {
    "type": "string",
    "pattern": r"^\$\{(file:[^}]+|env:[A-Za-z_][A-Za-z0-9_]*)\}$",
    "description": "A secret, as a reference only: ${file:/run/secrets/SECRET/KEY} "
    "(secretFiles) or ${env:NAME} (secretEnv), never the secret itself",
}
SCALAR_TYPES = {"integer", "number", "boolean"}
STRING_CONSTRAINTS = {"pattern", "enum", "minLength", "maxLength", "format"}

OBJECT = {"type": "object"}
OBJECTS = {"type": "array", "items": OBJECT}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
INT_OR_PERCENT = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]+%$"},
        {"type": "null"},
    ]
}
NAME = {"type": "string", "minLength": 1}
SHAPES: dict[str, dict[str, Any]] = {
    # Kubernetes objects, passed through as written (the API server checks them)
    "imagePullSecrets": {
        "type": "array",
        "items": {"type": "object", "required": ["name"], "properties": {"name": NAME}},
    },
    "env": {
        "type": "array",
        "items": {"type": "object", "required": ["name"], "properties": {"name": NAME}},
    },
    "envFrom": OBJECTS,
    "extraVolumes": OBJECTS,
    "extraVolumeMounts": OBJECTS,
    "resources": OBJECT,
    "podSecurityContext": OBJECT,
    "securityContext": OBJECT,
    "livenessProbe": OBJECT,
    "readinessProbe": OBJECT,
    "startupProbe": OBJECT,
    "tolerations": OBJECTS,
    "affinity": OBJECT,
    "nodeSelector": STRING_MAP,
    "podAnnotations": STRING_MAP,
    "podLabels": STRING_MAP,
    "service.annotations": STRING_MAP,
    "serviceAccount.annotations": STRING_MAP,
    "persistence.annotations": STRING_MAP,
    "serviceMonitor.labels": STRING_MAP,
    "serviceMonitor.tlsConfig": OBJECT,
    "prometheusRule.labels": STRING_MAP,
    "prometheusRule.alertLabels": STRING_MAP,
    "prometheusRule.additionalRules": OBJECTS,
    # the chart's own lists and choices
    "secretEnv": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "secretName", "key"],
            "properties": {
                "name": NAME,
                "secretName": NAME,
                "key": NAME,
                "optional": {"type": "boolean"},
            },
        },
    },
    "secretFiles": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName"],
            "properties": {"secretName": NAME},
        },
    },
    "extraArgs": {"type": "array", "items": {"type": "string"}},
    "logLevel": {"enum": ["debug", "info", "warning", "error"]},
    "logFormat": {"enum": ["json", "text"]},
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "service.type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "replicaCount": {"type": "integer", "minimum": 0},
    "workload": {"enum": ["auto", "StatefulSet", "Deployment"]},
    "topologySpread.maxSkew": {"type": "integer", "minimum": 1},
    "topologySpread.topologyKeys": {"type": "array", "items": {"type": "string", "minLength": 1}},
    "topologySpread.whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 1},
    "admin.port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "service.port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "persistence.size": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$"},
    "persistence.accessModes": {
        "type": "array",
        "minItems": 1,
        "items": {"enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]},
    },
    "podDisruptionBudget.maxUnavailable": INT_OR_PERCENT,
    "podDisruptionBudget.minAvailable": INT_OR_PERCENT,
    "podDisruptionBudget.unhealthyPodEvictionPolicy": {
        "enum": ["", "IfHealthyBudget", "AlwaysAllow"]
    },
    "serviceMonitor.interval": DURATION,
    "serviceMonitor.scrapeTimeout": DURATION,
    "prometheusRule.routeDown.for": DURATION,
    "prometheusRule.bufferAge.for": DURATION,
    "prometheusRule.bufferAge.seconds": {"type": "number", "exclusiveMinimum": 0},
    "prometheusRule.deadLetters.window": DURATION,
    "prometheusRule.deadLetters.threshold": {"type": "number", "minimum": 0},
}
"""Schemas by dotted path, replacing what the default would give."""

TOP_LEVEL_EXTRAS = {
    "global": {"type": "object", "description": "Values a parent chart shares (unused)"},
}


def builtin_config_schema() -> dict[str, Any]:
    """natsbridge's config schema for its own connector kinds, not for what else is installed,
    with each connection checked against its `kind` alone (one error, not one per kind)."""
    own = sorted(
        ep.name
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "natsbridge"
    )
    schema = json_schema([load_connector(name) for name in own])
    named = schema["properties"]["connections"]["patternProperties"]
    for pattern, alternatives in named.items():
        named[pattern] = by_kind(alternatives["anyOf"], schema["$defs"])
    return schema


def by_kind(alternatives: list[dict[str, Any]], definitions: dict[str, Any]) -> dict[str, Any]:
    """A connection: `kind` names one of the alternatives, whose schema then applies."""
    kinds = {}
    for alternative in alternatives:
        name = alternative["$ref"].rpartition("/")[2]
        kinds[definitions[name]["properties"]["kind"]["const"]] = alternative
    return {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": sorted(kinds)}},
        "allOf": [
            {"if": {"properties": {"kind": {"const": kind}}}, "then": ref}
            for kind, ref in sorted(kinds.items())
        ],
    }


def as_in_the_pod(node: Any) -> Any:
    """The config schema for values read after interpolation: scalars may be references,
    secrets must be."""
    if isinstance(node, list):
        return [as_in_the_pod(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "password":
        return SECRET_REFERENCE
    relaxed = {key: as_in_the_pod(value) for key, value in node.items()}
    kind = node.get("type")  # a dict where a model has a field named "type"
    if not isinstance(kind, str):
        return relaxed
    if kind in SCALAR_TYPES or (kind == "string" and STRING_CONSTRAINTS & node.keys()):
        return {"anyOf": [relaxed, REFERENCE]}
    return relaxed


def comments_above(lines: list[str], line: int) -> str:
    """The comment block right above 0-based `line`, as one paragraph, without its indented
    example lines (`#   - name: ...`)."""
    block: list[str] = []
    index = line - 1
    while index >= 0 and lines[index].lstrip().startswith("#"):
        text = lines[index].lstrip()[1:]
        if not text.startswith("   "):
            block.insert(0, text.strip())
        index -= 1
    return " ".join(part for part in block if part)


def inferred(node: yaml.Node, path: str, lines: list[str], config: dict[str, Any]) -> Any:
    """The schema of one value: from SHAPES, `config`'s, or its default's type."""
    if path == "config":
        return config
    if path in SHAPES:
        return dict(SHAPES[path])
    if isinstance(node, yaml.MappingNode):
        if not node.value:
            return dict(OBJECT)
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": properties(node, path, lines, config),
        }
    if isinstance(node, yaml.SequenceNode):
        return {"type": "array"}
    value = yaml.safe_load(yaml.serialize(node))
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if value is None:
        raise SystemExit(f"values.yaml: {path} is null: give it a shape in SHAPES")
    return {"type": kinds[type(value)]}


def properties(
    mapping: yaml.MappingNode, prefix: str, lines: list[str], config: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key_node, value_node in mapping.value:
        key = key_node.value
        path = f"{prefix}.{key}" if prefix else key
        schema = inferred(value_node, path, lines, config)
        description = comments_above(lines, key_node.start_mark.line)
        if description and path != "config":
            schema = {"description": description, **schema}
        result[key] = schema
    return result


def values_schema(chart: Path) -> dict[str, Any]:
    """The chart's whole values.schema.json, as a dict."""
    text = (chart / "values.yaml").read_text()
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode), "values.yaml is a mapping"
    config = as_in_the_pod(builtin_config_schema())
    definitions = config.pop("$defs")
    config.pop("$schema")
    config["title"] = "natsbridge config, version 1 (becomes /etc/natsbridge/bridge.yaml)"
    values = properties(root, "", text.splitlines(), config)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "natsbridge chart values",
        "description": "Generated by deploy/helm/values_schema.py from values.yaml: do not edit",
        "type": "object",
        "additionalProperties": False,
        "properties": {**values, **TOP_LEVEL_EXTRAS},
        "$defs": definitions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    parser.add_argument("--chart", type=Path, default=CHART, help="default: %(default)s")
    args = parser.parse_args(argv)
    schema = args.chart / "values.schema.json"
    wanted = json.dumps(values_schema(args.chart), indent=2) + "\n"
    if not args.check:
        schema.write_text(wanted)
        print(f"wrote {schema}")
        return 0
    current = schema.read_text() if schema.exists() else ""
    if current == wanted:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(), wanted.splitlines(), "committed", "generated", lineterm="", n=1
    )
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    print(f"{schema} is stale: run python deploy/helm/values_schema.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
