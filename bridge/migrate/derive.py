"""The routes a migration's phase runs, as route bodies the config loader checks like any.

mirror, verify, retire: ``NAME.to-nats`` (the legacy endpoint -> the JetStream stream).
cutover: also ``NAME.to-legacy`` (a JetStream durable consumer -> the legacy kind's sink
writing where the legacy endpoint reads, `writes_back` of the kind plus `back:`), so the
legacy consumers keep getting what producers moved to NATS publish. The copies that
``to-nats`` put into the stream carry this bridge's Bridge-Origin stamp of the legacy
connection, and ``to-legacy`` drops them as echoes (bridge.runtime.mapper): nothing loops.
done: no route. Route names are stable, so a reload only starts or stops ``to-legacy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from natsbridge.bridge.config.source import YamlPath
from natsbridge.bridge.migrate.model import TO_LEGACY, TO_NATS, MigrationSpec, Phase, route_name

ROUTES_OF_PHASE: dict[Phase, tuple[str, ...]] = {
    Phase.MIRROR: (TO_NATS,),
    Phase.VERIFY: (TO_NATS,),
    Phase.CUTOVER: (TO_NATS, TO_LEGACY),
    Phase.RETIRE: (TO_NATS,),
    Phase.DONE: (),
}


def stream_filter(subject_template: str) -> str:
    """The subjects `subject_template` can render: its literal tokens, then ``>``.

    ``legacy.orders.{{routing_key}}`` gives ``legacy.orders.>``; a literal subject itself.
    """
    if "{{" not in subject_template:
        return subject_template
    literal = []
    for token in subject_template.split("."):
        if "{{" in token:
            break
        literal.append(token)
    return ".".join([*literal, ">"])


def default_durable(migration: str) -> str:
    """The JetStream consumer of ``NAME.to-legacy`` (JetStream names have no '.')."""
    return f"natsbridge-{migration.replace('.', '_')}-{TO_LEGACY}"


def derive_routes(
    spec: MigrationSpec, phase: Phase, writes_back: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """(direction, route body) for each route of `phase`; `writes_back` from the legacy kind."""
    nats = spec.nats
    bodies = {
        TO_NATS: {
            "from": spec.legacy,
            "to": {
                "connection": nats.connection,
                "subject": nats.subject,
                "jetstream": {"stream": nats.stream},
            },
        },
        TO_LEGACY: {
            "from": {
                "connection": nats.connection,
                "subject": stream_filter(nats.subject),
                "jetstream": {
                    "stream": nats.stream,
                    "durable": nats.durable or default_durable(spec.name),
                },
            },
            "to": {
                "connection": spec.legacy.get("connection"),
                **writes_back,
                **(spec.back or {}),
            },
        },
    }
    delivery = spec.delivery.value
    return [
        (
            direction,
            {"name": route_name(spec.name, direction), **bodies[direction], "delivery": delivery},
        )
        for direction in ROUTES_OF_PHASE[phase]
    ]


def file_path(where: YamlPath, direction: str) -> Callable[[YamlPath], YamlPath]:
    """Translate a path in a derived route (below `where`) to the migration's own keys."""
    n = len(where)

    def translate(path: YamlPath) -> YamlPath:
        if path[:n] != where or len(path) == n:
            return path
        section, rest = path[n], path[n + 1 :]
        if section not in ("from", "to"):
            return path  # name, delivery: the migration's own
        legacy_side = (section == "from") == (direction == TO_NATS)
        if not legacy_side:
            return (*where, "nats", *_nats_key(rest))
        if direction == TO_NATS or rest[:1] == ("connection",):
            return (*where, "legacy", *rest)
        return (*where, "back", *rest)  # what writes_back gave is right: the problem is back's

    return translate


def _nats_key(rest: YamlPath) -> YamlPath:
    """`jetstream.stream` -> `stream`, `jetstream.durable` -> `durable`, `subject` as is."""
    if rest[:1] == ("jetstream",):
        return rest[1:2]
    return rest[:1]
