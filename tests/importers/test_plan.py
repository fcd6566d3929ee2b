"""Whatever a definitions export or a cluster holds, the generated config validates (no brokers).

Property tests: arbitrary names (dots, `$`, `{{`, `*`, `#`, spaces, non-ASCII, control
characters), exchange types, arguments and bindings go through the importer, the writer
and the real config loader; every route must load and carry the legacy names unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from natsbridge.bridge.importers.cli import validate_text
from natsbridge.bridge.importers.kafka import TopicFacts, plan_kafka
from natsbridge.bridge.importers.names import MIGRATION_NAME_MAX, Namer, check_subject_prefix
from natsbridge.bridge.importers.plan import ImportFailed, ImportPlan
from natsbridge.bridge.importers.rabbitmq import plan_rabbitmq, reads_as_template
from natsbridge.bridge.importers.writer import Form, render, scalar

NAMES = st.lists(st.sampled_from([*"ab.-_$%{}*#> é\t\u2028😀", "${", "{{", "}}"]), max_size=8).map(
    "".join
)
TYPES = st.sampled_from(["topic", "direct", "fanout", "headers", "x-consistent-hash"])
ARGUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "x-max-length": st.integers(-1, 10**6),
        "x-message-ttl": st.integers(0, 10**9),
        "x-dead-letter-exchange": NAMES,
        "x-max-priority": st.integers(1, 10),
        "x-something": st.booleans(),
    },
)


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    exchanges = draw(st.dictionaries(NAMES, TYPES, max_size=5))
    queues = draw(st.dictionaries(NAMES, ARGUMENTS, max_size=5))
    bindings = []
    if exchanges and queues:
        for _ in range(draw(st.integers(0, 8))):
            bindings.append(
                {
                    "source": draw(st.sampled_from(sorted(exchanges))),
                    "destination": draw(st.sampled_from(sorted(queues))),
                    "destination_type": "queue",
                    "routing_key": draw(NAMES),
                    "arguments": {},
                    "vhost": "/",
                }
            )
    return {
        "exchanges": [{"name": n, "type": t, "vhost": "/"} for n, t in exchanges.items()],
        "queues": [{"name": n, "arguments": a, "vhost": "/"} for n, a in queues.items()],
        "bindings": bindings,
    }


def _loads_with_legacy_names_unchanged(plan: ImportPlan) -> None:
    for form in Form:
        assert validate_text(render(plan, form), plan) == []
    # A migration that is complete for cutover (`back` written, or not needed) stays valid.
    complete = [
        m
        for m in plan.migrations
        if m.back or "topics" in m.legacy or not reads_as_template(m.legacy.get("queue", "{{"))
    ]
    if complete:
        ready = dataclasses.replace(plan, migrations=complete)
        assert validate_text(render(ready, Form.MIGRATIONS), ready, "cutover") == []
    loaded = yaml.safe_load(render(plan, Form.MIGRATIONS))
    for migration, written in zip(plan.migrations, loaded["migrations"], strict=True):
        legacy = {k: v for k, v in written["legacy"].items() if k != "connection"}
        # `$${` is the config's literal `${`: the loader reads it back as the original name.
        assert legacy == _escaped(migration.legacy)


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


@settings(max_examples=60, deadline=None)
@given(definitions())
def test_any_definitions_give_a_config_that_validates(defs: dict[str, Any]) -> None:
    try:
        plan = plan_rabbitmq(defs, None, "legacy", "natsbridge import rabbitmq")
    except ImportFailed as exc:
        assert "no exchange with bindings and no queue to import" in str(exc)
        return
    _loads_with_legacy_names_unchanged(plan)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
KEYS = st.sampled_from(["exchanges", "queues", "bindings", "policies", "vhosts", "parameters"])
FIELDS = ["type", "destination", "destination_type", "routing_key", "arguments", "pattern"]
FIELDS += ["definition", "priority", "apply-to", "internal", "vhost"]
ENTRY = st.fixed_dictionaries(
    {"name": st.sampled_from(["q", "e", "r"]), "source": st.sampled_from(["e", "q"])},
    optional={
        **{field: JSON for field in FIELDS},
        "destination": st.sampled_from(["q", "e"]) | JSON,
        "type": st.sampled_from(["topic", "headers"]) | JSON,
        "destination_type": st.sampled_from(["queue", "exchange"]) | JSON,
        "arguments": st.dictionaries(st.sampled_from(["x-max-length", "x-overflow"]), JSON),
        "vhost": st.just("/") | JSON,
    },
)


@pytest.mark.parametrize(
    "defs",
    [{"queues": {}}, {"exchanges": [1]}, {"bindings": [{"source": 1}]}, {"policies": "x"}],
)
def test_definitions_of_the_wrong_shape_are_one_line(defs: dict[str, Any]) -> None:
    with pytest.raises(ImportFailed, match=r"^definitions: "):
        plan_rabbitmq(defs, None, "legacy", "natsbridge import rabbitmq")


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(KEYS, st.lists(ENTRY, max_size=4)),
    st.none() | st.sampled_from(["/", "x"]),
)
def test_malformed_definitions_are_one_line_never_a_traceback(
    defs: dict[str, Any], vhost: str | None
) -> None:
    try:
        plan = plan_rabbitmq(defs, vhost, "legacy", "natsbridge import rabbitmq")
    except ImportFailed as exc:
        assert "\n" not in str(exc)
        return
    for form in Form:
        assert validate_text(render(plan, form), plan) == []


TOPIC_NAMES = st.text(st.sampled_from(list("aZ09._-")), min_size=1, max_size=249).filter(
    lambda name: not name.startswith("__") and name not in (".", "..")  # Kafka refuses those
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.builds(
            TopicFacts,
            name=TOPIC_NAMES,
            partitions=st.integers(0, 64),
            replication=st.integers(1, 3),
            config=st.fixed_dictionaries(
                {},
                optional={
                    "retention.ms": st.sampled_from(["-1", "0", "3600000", "x"]),
                    "retention.bytes": st.sampled_from(["-1", "1048576"]),
                    "cleanup.policy": st.sampled_from(["delete", "compact", "compact,delete"]),
                },
            ),
            groups=st.lists(NAMES | st.just("natsbridge-x.to-nats"), max_size=3).map(tuple),
            config_error=st.none() | st.just("Broker: Topic authorization failed"),
            metadata_error=st.none() | st.just("Broker: Leader not available"),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda topic: topic.name,
    )
)
def test_any_topics_give_a_config_that_validates(topics: list[TopicFacts]) -> None:
    try:
        plan = plan_kafka(topics, "127.0.0.1:9092", "legacy.kafka", "natsbridge import kafka")
    except ImportFailed as exc:
        assert all(t.metadata_error or not t.partitions for t in topics), exc
        return
    _loads_with_legacy_names_unchanged(plan)


@settings(max_examples=30, deadline=None)
@given(st.text(), st.text())
def test_any_command_line_and_broker_text_stay_in_their_comments(vhost: str, reason: str) -> None:
    topic = TopicFacts("t", 1, 1, {}, (), config_error=reason)
    plan = plan_kafka([topic], "127.0.0.1:9092", "legacy", f"natsbridge import --vhost {vhost}")
    for form in Form:
        assert validate_text(render(plan, form), plan) == []


@given(st.text())
def test_a_scalar_reads_back_as_the_same_text(text: str) -> None:
    assert yaml.safe_load(f"value: {scalar(text)}")["value"] == text.replace("${", "$${")


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=8))
def test_migration_names_are_valid_and_distinct(names: list[str]) -> None:
    namer = Namer()
    made = [namer.migration(name) for name in names]
    assert len(set(made)) == len(made)
    assert all(0 < len(name) <= MIGRATION_NAME_MAX for name in made)
    assert all(name[0].isascii() and name[0].isalnum() for name in made)


@pytest.mark.parametrize("prefix", ["", "a..b", "a.*", "a.>", " a", "a.{{x}}", "a$b", ".a"])
def test_a_subject_prefix_must_be_literal_tokens(prefix: str) -> None:
    with pytest.raises(ValueError, match="expected a subject prefix"):
        check_subject_prefix(prefix)
