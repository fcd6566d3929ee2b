"""Declared resources without a broker: the config keys, the comparison, the messages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsbridge.bridge.config import load_config
from natsbridge.bridge.declare import Declaration, check, differences, refusal, report
from natsbridge.bridge.errors import ConfigError, PermanentError
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.dry_run import dry_run

HEAD = """version: 1
bridge: {id: t, data_dir: DATA}
connections:
  nats: {kind: nats, servers: ["nats://127.0.0.1:4222"]}
  kafka: {kind: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
routes:
"""


def load(tmp_path: Path, routes: str, strict: bool = False) -> Any:
    head = HEAD.replace("DATA", str(tmp_path / "data"))
    if strict:
        head = head.replace("{id: t,", "{id: t, strict_declarations: true,")
    path = tmp_path / "c.yaml"
    path.write_text(head + routes)
    return load_config(path)


def js_route(stream_keys: str) -> str:
    return (
        "  - name: r\n"
        "    from: {connection: kafka, topics: [t-in]}\n"
        f"    to: {{connection: nats, subject: out.x, jetstream: {{stream: S, {stream_keys}}}}}\n"
    )


def test_jetstream_takes_the_stream_settings_and_declares_them(tmp_path: Path) -> None:
    """Tried: `to.jetstream` had no keys for replicas, limits, retention or storage."""
    config = load(
        tmp_path,
        js_route(
            "replicas: 3, storage: memory, retention: workqueue, max_msgs: 10, "
            "max_bytes: 1MiB, max_age: 48h, discard: new"
        ),
    )
    route = config.routes[0]
    [declared] = load_connector("nats").declarations(route, "to")
    assert declared.resource == "JetStream stream" and declared.name == "S"
    assert dict(declared.settings) == {
        "replicas": 3,
        "storage": "memory",
        "retention": "workqueue",
        "max_msgs": 10,
        "max_bytes": 1024 * 1024,
        "max_age": 48 * 3600.0,
        "discard": "new",
        "subjects": ["out.x"],
    }
    assert declared.compared == {
        "replicas",
        "storage",
        "retention",
        "max_msgs",
        "max_bytes",
        "max_age",
        "discard",
    }
    # Keys left to their defaults are not compared: an existing stream's are the operator's.
    [default] = load_connector("nats").declarations(load(tmp_path, js_route("")).routes[0], "to")
    assert default.compared == frozenset() and default.settings["replicas"] == 1


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("replicas: 0", "c.yaml:9:"),
        ("storage: disk", "'file' or 'memory'"),
        ("retention: forever", "'limits', 'interest' or 'workqueue'"),
        ("max_age: forever", "duration"),
        ("max_bytes: lots", "size"),
        ("discard: some", "'old' or 'new'"),
        ("max_msgs: 0", "greater than or equal to 1"),
    ],
)
def test_a_wrong_stream_setting_is_one_positioned_line(
    tmp_path: Path, keys: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, js_route(keys))
    [problem] = caught.value.problems
    assert "c.yaml:9:" in problem and expected in problem and "\n" not in problem


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["replicas", "storage", "retention", "max_msgs", "max_bytes", "max_age"]),
    value=st.one_of(st.integers(-5, 10**13), st.text(max_size=12), st.floats(allow_nan=True)),
)
def test_any_stream_setting_loads_or_is_one_error_line(
    tmp_path: Path, key: str, value: object
) -> None:
    try:
        config = load(tmp_path, js_route(f"{key}: {json.dumps(value)}"))
    except ConfigError as exc:
        assert all("\n" not in p and "c.yaml:" in p for p in exc.problems)
        return
    [declared] = load_connector("nats").declarations(config.routes[0], "to")
    assert key in declared.compared


def test_kafka_sinks_create_missing_topics_by_default_like_jetstream(tmp_path: Path) -> None:
    """Tried: streams were created by default while Kafka topics were not."""
    config = load(
        tmp_path,
        "  - name: r\n"
        "    from: {connection: nats, subject: a.b, jetstream: {stream: A}}\n"
        "    to: {connection: kafka, topic: t-out}\n",
    )
    route = config.routes[0]
    [topic] = load_connector("kafka").declarations(route, "to")
    [stream] = load_connector("nats").declarations(route, "from")
    assert topic.create and stream.create
    assert dict(topic.settings) == {"partitions": 1, "replication_factor": 1}
    assert topic.compared == frozenset()  # defaults: an existing topic is not compared


def test_kafka_create_false_and_create_topic_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="create_topic needs create: true"):
        load(
            tmp_path,
            "  - name: r\n"
            "    from: {connection: nats, subject: a.b}\n"
            "    to: {connection: kafka, topic: t, create: false, create_topic: {partitions: 2}}\n",
        )


def declared(**settings: object) -> Declaration:
    return Declaration(
        "JetStream stream",
        "S",
        "nats",
        settings,
        frozenset({"replicas", "max_msgs"}),
        where="route 'r' to.jetstream",
    )


def test_only_the_compared_settings_the_broker_reports_differ() -> None:
    ours = declared(replicas=3, max_msgs=None, storage="file")
    broker = {"replicas": 1, "max_msgs": None, "storage": "memory"}
    assert [str(d) for d in differences(ours, broker)] == ["replicas ours 3, broker's 1"]
    assert differences(ours, {"storage": "memory"}) == []


def test_a_difference_warns_once_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    ours = declared(replicas=3, max_msgs=100)
    theirs = {"replicas": 3, "max_msgs": 5}
    with caplog.at_level("WARNING", "natsbridge.declare"):
        report(ours, theirs, strict=False)
        report(ours, theirs, strict=False)
    [line] = [r.getMessage() for r in caplog.records]
    assert "JetStream stream 'S'" in line and "different max_msgs: ours 100, broker's 5" in line
    assert "bridge.strict_declarations" in line


def test_strict_refuses_with_one_line_naming_where_the_key_lives() -> None:
    ours = declared(replicas=3, max_msgs=100)
    with pytest.raises(PermanentError) as caught:
        report(ours, {"replicas": 1, "max_msgs": 100}, strict=True)
    assert str(caught.value) == refusal(ours, differences(ours, {"replicas": 1}))
    assert "replicas ours 3, broker's 1" in str(caught.value)
    assert "bridge.strict_declarations is true" in str(caught.value)
    assert "route 'r' to.jetstream" in str(caught.value)
    report(ours, None, strict=True)  # missing: nothing to compare (the route creates it)


def test_a_broker_that_cannot_be_asked_is_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under strict, a broker down at the first connect must not skip the comparison."""
    config = load(tmp_path, js_route("max_msgs: 100"), strict=True)
    answers: list[object] = [ConnectionError("down"), [{"max_msgs": 5}]]

    async def observe(connection: object, declarations: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(load_connector("nats"), "observe", observe)
    assert asyncio.run(check(config.routes[0], "to", config)) is False
    with pytest.raises(PermanentError, match="max_msgs ours 100, broker's 5"):
        asyncio.run(check(config.routes[0], "to", config))


def test_dry_run_says_which_broker_it_could_not_ask_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "down.yaml"
    text = HEAD.replace("DATA", str(tmp_path / "data")) + js_route("max_msgs: 100")
    path.write_text(text.replace("nats://127.0.0.1:4222", "nats://127.0.0.1:1"))
    config = load_config(path)
    said: list[str] = []
    assert dry_run(config, said.append) == 1
    [header, *rows, summary] = said
    assert header.split() == ["ROUTE", "CONNECTION", "RESOURCE", "STATE", "DETAIL"]
    stream = next(row for row in rows if "JetStream stream S" in row)
    assert "unknown" in stream and "cannot ask:" in stream and "nats" in stream
    assert summary.startswith("dry run: 2 resources, nothing created; ")
