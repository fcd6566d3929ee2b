"""`natsbridge import rabbitmq`: a RabbitMQ definitions export becomes one migration per flow.

Reads the JSON of `rabbitmqctl export_definitions FILE` or of the management API
(`GET /api/definitions`, all vhosts, or `/api/definitions/VHOST`, one vhost without `vhost`
fields), for one vhost (`--vhost`, default `/`):

* each exchange with bindings becomes a migration whose tap is the bridge's own queue, bound
  to the exchange with the binding keys of the legacy queues (and exchanges) bound to it;
  its subject is `PREFIX.<exchange>.{{routing_key}}`;
* each queue with no binding (so fed through the default exchange) becomes a migration that
  consumes the queue itself: AMQP offers no tap there (the comments say so);
* queue arguments and policies (`x-max-length`, `x-max-length-bytes`, `x-message-ttl`) size
  the JetStream stream, so it keeps at least what every legacy queue keeps;
* dead-letter exchanges, priorities, overflow, queue expiry, unknown exchange types, header
  bindings and exchange-to-exchange bindings are noted in comments, as is all that is skipped.

Nothing here talks to a broker: the mapping is a pure function of the definitions.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any

from natsbridge.bridge.importers.names import Namer, printable
from natsbridge.bridge.importers.plan import (
    ImportFailed,
    ImportPlan,
    Interpolated,
    Migration,
    StreamLimits,
)
from natsbridge.bridge.importers.writer import shown

MAX_DEFINITIONS_BYTES = 256 * 1024**2  # a definitions export of a very large broker
EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
# Queue arguments and the policy keys that set the same thing.
_LIMIT_ARGUMENTS = {
    "x-max-length": "max-length",
    "x-max-length-bytes": "max-length-bytes",
    "x-message-ttl": "message-ttl",
}
_NOTED_ARGUMENTS = {
    "x-dead-letter-exchange": "dead-letter-exchange",
    "x-dead-letter-routing-key": "dead-letter-routing-key",
    "x-overflow": "overflow",
    "x-expires": "expires",
    "x-max-priority": "max-priority",
    "x-single-active-consumer": "single-active-consumer",
    "x-queue-type": "queue-type",
}
_IGNORED_ARGUMENTS = frozenset({"x-queue-mode", "x-queue-version", "x-quorum-initial-group-size"})
_QUEUE_POLICY_TARGETS = frozenset({"queues", "all", "classic_queues", "quorum_queues"})
AMQP_URL_VARIABLE = "NATSBRIDGE_AMQP_URL"
BRIDGE_QUEUE_PREFIX = "natsbridge."  # the queue a bridge's exchange source binds for itself


def read_definitions(path: str) -> dict[str, Any]:
    """The parsed definitions file; ImportFailed (one line) when it is not one."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_DEFINITIONS_BYTES + 1)
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read definitions: {exc.strerror}") from None
    if len(data) > MAX_DEFINITIONS_BYTES:
        raise ImportFailed(f"{path}: larger than {MAX_DEFINITIONS_BYTES} bytes")
    try:
        definitions = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ImportFailed(f"{path}: not JSON: {exc}") from None
    if not isinstance(definitions, dict):
        raise ImportFailed(f"{path}: expected a JSON object (a RabbitMQ definitions export)")
    return definitions


def plan_rabbitmq(
    definitions: dict[str, Any], vhost: str | None, prefix: str, command: str
) -> ImportPlan:
    """The migrations for one vhost of `definitions`; ImportFailed if there are none."""
    chosen, plan = _vhost_plan(definitions, vhost, command)
    exchanges = _entries(definitions, "exchanges", chosen)
    queues = {q["name"]: q for q in _entries(definitions, "queues", chosen)}
    bindings = _entries(definitions, "bindings", chosen, named_by="source")
    policies = _entries(definitions, "policies", chosen)
    settings = {name: _queue_settings(q, policies, plan) for name, q in queues.items()}
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    bound_queues: set[str] = set()
    bridged: set[str] = set()
    for binding in bindings:
        if _to_bridge_queue(binding):
            bridged.add(binding["source"])
            continue
        by_source[binding["source"]].append(binding)
        if binding.get("destination_type") == "queue":
            bound_queues.add(str(binding.get("destination")))
    namer = Namer()
    exchange_names = {x["name"] for x in exchanges if printable(x["name"])}
    for exchange in sorted(exchanges, key=lambda x: x["name"]):
        name = exchange["name"]
        if name in bridged and not by_source[name]:
            plan.skipped.append(
                f"exchange {shown(name)}: bound only to queues of natsbridge routes "
                f"({BRIDGE_QUEUE_PREFIX}*), which copy it already"
            )
            continue
        migration = _exchange_migration(
            exchange, by_source[name], settings, exchange_names, namer, prefix, plan
        )
        if migration is not None:
            plan.migrations.append(migration)
    bridge_queues = {name for name in queues if name.startswith(BRIDGE_QUEUE_PREFIX)}
    for name in sorted(set(queues) - bound_queues - bridge_queues):
        migration = _queue_migration(name, settings[name], namer, prefix, plan)
        if migration is not None:
            plan.migrations.append(migration)
    if not plan.migrations:
        skipped = (
            f" ({len(plan.skipped)} skipped, first: {plan.skipped[0]})" if plan.skipped else ""
        )
        raise ImportFailed(
            f"vhost {chosen!r} has no exchange with bindings and no queue to import{skipped}"
        )
    return plan


def _vhost_plan(
    definitions: dict[str, Any], vhost: str | None, command: str
) -> tuple[str, ImportPlan]:
    named = [
        item
        for key in ("exchanges", "queues", "bindings", "vhosts")
        for item in _list(definitions, key)
        if isinstance(item, dict)
    ]
    present = sorted(
        {str(item["vhost"]) for item in named if "vhost" in item}
        | {
            str(v["name"])
            for v in _list(definitions, "vhosts")
            if isinstance(v, dict) and "name" in v
        }
    )
    chosen = vhost if vhost is not None else "/"
    if vhost is None and present and chosen not in present:
        raise ImportFailed(
            f"no vhost '/' in the definitions: choose one of {', '.join(map(repr, present))} "
            "with --vhost"
        )
    if vhost is not None and present and vhost not in present:
        raise ImportFailed(
            f"no vhost {vhost!r} in the definitions (found {', '.join(map(repr, present))})"
        )
    url = "amqp://guest:guest@127.0.0.1:5672/" + urllib.parse.quote(chosen, safe="")
    plan = ImportPlan(
        command=command,
        legacy_name="rabbitmq",
        legacy_connection={
            "kind": "amqp",
            "url": Interpolated(f"${{env:NATSBRIDGE_AMQP_URL:-{url}}}"),
        },
    )
    plan.notes.append(
        f"set NATSBRIDGE_AMQP_URL to the broker, with a user allowed to declare and bind "
        f"queues in vhost {shown(chosen)} (the definitions hold no password to reuse)."
    )
    others = [v for v in present if v != chosen]
    if others:
        plan.notes.append(
            f"only vhost {shown(chosen)} is imported; the definitions also hold "
            f"{', '.join(map(shown, others))} (run again with --vhost)."
        )
    for parameter in _list(definitions, "parameters"):
        if isinstance(parameter, dict) and parameter.get("vhost", chosen) == chosen:
            plan.skipped.append(
                f"runtime parameter {shown(str(parameter.get('name')))} "
                f"({shown(str(parameter.get('component')))}): shovels and federation are not "
                "imported"
            )
    return chosen, plan


def _list(definitions: dict[str, Any], key: str) -> list[Any]:
    items = definitions.get(key, [])
    if not isinstance(items, list):
        raise ImportFailed(f"definitions: '{key}' must be a list, found {type(items).__name__}")
    return items


def _to_bridge_queue(binding: dict[str, Any]) -> bool:
    destination = binding.get("destination")
    return (
        binding.get("destination_type") == "queue"
        and isinstance(destination, str)
        and destination.startswith(BRIDGE_QUEUE_PREFIX)
    )


def _entries(
    definitions: dict[str, Any], key: str, vhost: str, named_by: str = "name"
) -> list[dict[str, Any]]:
    """The `key` items of `vhost` (items without `vhost` belong to it), each checked."""
    entries = []
    for i, item in enumerate(_list(definitions, key)):
        if not isinstance(item, dict) or not isinstance(item.get(named_by), str):
            raise ImportFailed(
                f"definitions: {key}[{i}]: expected an object with a string '{named_by}'"
            )
        if item.get("vhost", vhost) == vhost:
            entries.append(item)
    return entries


def _arguments(item: dict[str, Any]) -> dict[str, Any]:
    arguments = item.get("arguments") or {}
    return arguments if isinstance(arguments, dict) else {}


class _QueueSettings:
    """A queue's effective arguments (its own, else its policy's) and what they mean."""

    def __init__(self, name: str, values: dict[str, Any], notes: list[str]) -> None:
        self.name = name
        self.values = values
        self.notes = notes

    def limit(self, argument: str) -> int | None:
        value = self.values.get(argument)
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        )


def _queue_settings(
    queue: dict[str, Any], policies: list[dict[str, Any]], plan: ImportPlan
) -> _QueueSettings:
    name = queue["name"]
    values = dict(_arguments(queue))
    policy = _policy_for(name, policies, plan)
    if policy is not None:
        definition = policy.get("definition") or {}
        for argument, key in {**_LIMIT_ARGUMENTS, **_NOTED_ARGUMENTS}.items():
            if isinstance(definition, dict) and key in definition:
                values.setdefault(argument, definition[key])
    notes = []
    dlx = values.get("x-dead-letter-exchange")
    if isinstance(dlx, str):
        dlx_key = values.get("x-dead-letter-routing-key")
        with_key = f" with routing key {shown(str(dlx_key))}" if dlx_key is not None else ""
        notes.append(
            f"queue {shown(name)} dead-letters (rejected, expired or over its length limit) to "
            f"exchange {shown(dlx or '(default)')}{with_key}: that is a flow of its own "
            "(its migration, if imported, copies it); the mirror copy here keeps every message."
        )
    if values.get("x-overflow") in ("reject-publish", "reject-publish-dlx"):
        notes.append(
            f"queue {shown(name)} refuses publishes when full (x-overflow "
            f"{values['x-overflow']}); JetStream's equivalent is the stream's discard policy new."
        )
    if values.get("x-max-priority") is not None:
        notes.append(
            f"queue {shown(name)} has priorities (x-max-priority): not mapped, JetStream "
            "delivers in stream order."
        )
    if values.get("x-expires") is not None:
        notes.append(
            f"queue {shown(name)} is deleted after {values['x-expires']} ms unused (x-expires): "
            "not mapped."
        )
    if values.get("x-single-active-consumer"):
        notes.append(
            f"queue {shown(name)} has a single active consumer: on NATS, a durable consumer "
            "with max_ack_pending 1 keeps that order."
        )
    if values.get("x-queue-type") == "stream":
        notes.append(
            f"queue {shown(name)} is a RabbitMQ stream: its consumers read by offset, which the "
            "bridge's tap does not copy."
        )
    known = {*_LIMIT_ARGUMENTS, *_NOTED_ARGUMENTS, *_IGNORED_ARGUMENTS}
    for argument in sorted(set(values) - known):
        notes.append(f"queue {shown(name)}: argument {shown(argument)} not mapped.")
    return _QueueSettings(name, values, notes)


def _policy_for(
    queue: str, policies: list[dict[str, Any]], plan: ImportPlan
) -> dict[str, Any] | None:
    """The policy RabbitMQ applies to `queue`: the matching one of highest priority."""
    best: dict[str, Any] | None = None
    for policy in policies:
        if str(policy.get("apply-to", "all")) not in _QUEUE_POLICY_TARGETS:
            continue
        try:
            matches = re.search(str(policy.get("pattern", "")), queue) is not None
        except re.error:
            note = f"policy {shown(policy['name'])}: pattern not understood, not applied."
            if note not in plan.notes:
                plan.notes.append(note)
            continue
        priority = policy.get("priority", 0)
        if matches and (best is None or _priority(priority) > _priority(best.get("priority", 0))):
            best = policy
    return best


def _priority(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _exchange_migration(
    exchange: dict[str, Any],
    bindings: list[dict[str, Any]],
    settings: dict[str, _QueueSettings],
    exchange_names: set[str],
    namer: Namer,
    prefix: str,
    plan: ImportPlan,
) -> Migration | None:
    name = exchange["name"]
    kind = exchange.get("type")
    if name == "" or (name.startswith("amq.") and not bindings):
        return None  # the default and unused built-in exchanges: nothing to migrate
    if not printable(name):
        plan.skipped.append(f"exchange {shown(name)}: its name has control characters")
        return None
    if kind not in EXCHANGE_TYPES:
        plan.skipped.append(
            f"exchange {shown(name)}: type {shown(str(kind))} has no tap (the bridge binds "
            f"{', '.join(EXCHANGE_TYPES)} exchanges)"
        )
        return None
    if not bindings:
        plan.skipped.append(f"exchange {shown(name)} ({kind}): no bindings, nothing consumes it")
        return None
    keys = keys_bound = sorted({str(b.get("routing_key", "")) for b in bindings})
    if not all(key == "" or printable(key) for key in keys):
        plan.skipped.append(f"exchange {shown(name)}: a binding key has control characters")
        return None
    if kind in ("fanout", "headers") or (kind == "topic" and "#" in keys):
        keys = ["#"]
    queues = sorted(
        {str(b.get("destination")) for b in bindings if b.get("destination_type") == "queue"}
    )
    targets = sorted(
        {str(b.get("destination")) for b in bindings if b.get("destination_type") == "exchange"}
    )
    migration_name = namer.migration(name)
    subject = f"{prefix}.{namer.token(name)}"
    migration = Migration(
        name=migration_name,
        legacy={"exchange": name, "exchange_type": kind, "binding_keys": keys},
        subject=subject + ".{{routing_key}}",
        stream=namer.stream(migration_name),
        stream_subject=subject + ".>",
        title=f"exchange {shown(name)} ({kind}), bound to "
        + ", ".join(
            [f"queue {shown(q)}" for q in queues] + [f"exchange {shown(x)}" for x in targets]
        ),
    )
    if kind in ("fanout", "headers") or (kind == "topic" and set(keys_bound) == {"#"}):
        # Every legacy consumer takes every routing key: the NATS subject will do as one.
        migration.back = {"routing_key": "{{subject}}"}
    else:
        migration.notes.append(
            "phase cutover needs back.routing_key (the routing key of what producers publish "
            f"on NATS; legacy bindings: {', '.join(map(shown, keys_bound))}): a template "
            f"cannot take the prefix {shown(subject + '.')} off a subject of any length, so "
            "set it before `migrate advance` to cutover, e.g. "
            '"{{header(Amqp-Routing-Key)}}" with NATS producers setting that header.'
        )
    if kind == "headers":
        matched = sorted({json.dumps(_arguments(b), sort_keys=True) for b in bindings})
        migration.notes.append(
            "headers exchange: the tap binds without header arguments, so it copies every "
            f"message published here, also those no legacy binding matches ({'; '.join(matched)})."
        )
    if exchange.get("internal"):
        migration.notes.append(
            "internal exchange: producers reach it only through other exchanges' bindings."
        )
    for target in targets:
        also = " (its own migration copies it again)" if target in exchange_names else ""
        migration.notes.append(f"bound to exchange {shown(target)}: messages routed on{also}.")
    queue_settings = [settings[q] for q in queues if q in settings]
    for queue in queue_settings:
        migration.notes.extend(queue.notes)
    migration.limits = _limits(queue_settings)
    return migration


def _queue_migration(
    name: str, settings: _QueueSettings, namer: Namer, prefix: str, plan: ImportPlan
) -> Migration | None:
    if not printable(name):
        plan.skipped.append(f"queue {shown(name)}: its name has control characters")
        return None
    if name.startswith("amq."):
        plan.skipped.append(f"queue {shown(name)}: a server-named queue")
        return None
    migration_name = namer.migration(name)
    subject = f"{prefix}.{namer.token(name)}"
    migration = Migration(
        name=migration_name,
        legacy={"queue": name},
        subject=subject,
        stream=namer.stream(migration_name),
        stream_subject=subject,
        title=f"queue {shown(name)}, fed through the default exchange (no bindings)",
        notes=[
            "AMQP has no tap on the default exchange: this migration consumes the queue "
            "itself, competing with its legacy consumers from phase mirror on. To mirror "
            "without that, publish through an exchange bound to the queue and import again.",
            *settings.notes,
        ],
        limits=_limits([settings]),
    )
    if reads_as_template(name):
        migration.notes.append(
            "the queue's name holds '{{' or '}}', which phase cutover would read as a template "
            "when it writes back through the default exchange: rename the queue before cutover."
        )
    return migration


def reads_as_template(name: str) -> bool:
    """True when `name` used as a template (a routing key) would not be literal text."""
    return "{{" in name or "}}" in name


def _limits(queues: list[_QueueSettings]) -> StreamLimits:
    """Limits that keep what every queue keeps: the largest, and none if one has none."""

    def largest(argument: str) -> int | None:
        values = [q.limit(argument) for q in queues]
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)

    return StreamLimits(
        max_msgs=largest("x-max-length"),
        max_bytes=largest("x-max-length-bytes"),
        max_age_ms=largest("x-message-ttl"),
    )
