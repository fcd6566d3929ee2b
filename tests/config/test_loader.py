"""Config loading: the shared examples validate; every kind of mistake is located precisely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.model import Delivery
from natsbridge.bridge.errors import ConfigError
from natsbridge.connectors.amqp.config import AmqpSource
from natsbridge.connectors.nats.config import NatsSink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RABBIT = (EXAMPLES / "rabbitmq-nats.yaml").read_text()


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Load `text` as a config file expected to fail; return its problems."""
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value.problems


def edit(old: str, new: str, text: str = RABBIT) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("name", ["rabbitmq-nats", "kafka-nats", "stomp-nats"])
def test_shared_examples_validate(name: str) -> None:
    config = load_config(EXAMPLES / f"{name}.yaml", {})
    assert config.bridge.id == "example-dc1"
    assert config.routes and all(route.templates for route in config.routes)


def test_example_is_modelled_with_types_and_defaults() -> None:
    config = load_config(EXAMPLES / "rabbitmq-nats.yaml", {})
    orders, shipments, pricing = config.routes
    assert isinstance(orders.source, AmqpSource) and orders.source.binding_keys == ["#"]
    assert isinstance(orders.sink, NatsSink) and orders.sink.jetstream is not None
    assert orders.sink.jetstream.stream == "ORDERS"
    assert shipments.spec.delivery is Delivery.AT_LEAST_ONCE
    assert pricing.spec.request_reply is not None and pricing.spec.request_reply.timeout == 5.0
    assert config.bridge.admin.listen == "127.0.0.1:7777"
    assert config.bridge.data_dir == "./natsbridge-data"


def test_misspelt_key_is_located_with_a_suggestion(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("exchange: orders", "exchnage: orders"))
    assert problem.startswith(f"{tmp_path / 'bridge.yaml'}:22:7: routes[0].from.exchnage: ")
    assert "unknown key 'exchnage' — did you mean 'exchange'?" in problem


def test_misspelt_key_in_a_nested_section(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("stream: ORDERS", "strem: ORDERS"))
    assert ":28:9: routes[0].to.jetstream.strem: unknown key 'strem'" in problem
    assert "did you mean 'stream'?" in problem


def test_wrong_type_says_expected_and_found(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("delivery: at_most_once", "delivery: sometimes"))
    assert ":57:5: routes[2].delivery: expected " in problem
    assert "'exactly_once'" in problem and "found 'sometimes'" in problem


def test_wrong_duration(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("timeout: 5s", "timeout: soon"))
    assert ":56:7: routes[2].request_reply.timeout: " in problem
    assert "expected a duration" in problem and "'soon'" in problem


@pytest.mark.parametrize(
    ("subject", "reason"),
    [("orders..created", "empty"), ("foo.>.bar", ">"), ("foo bar", "whitespace")],
)
def test_bad_source_subject(tmp_path: Path, subject: str, reason: str) -> None:
    [problem] = problems_of(tmp_path, edit('subject: "pricing.quote"', f'subject: "{subject}"'))
    assert ":49:7: routes[2].from.subject: " in problem
    assert reason in problem


def test_bad_target_subject(tmp_path: Path) -> None:
    text = edit('"legacy.orders.{{routing_key}}"', '"legacy..orders.{{routing_key}}"')
    [problem] = problems_of(tmp_path, text)
    # The column points into the template, at the empty token (after the opening quote).
    assert ":26:24: routes[0].to.subject: " in problem and "empty" in problem


def test_undefined_connection_suggests_the_nearest(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("connection: rabbit\n", "connection: rabit\n"))
    assert ":21:7: routes[0].from.connection: no connection named 'rabit'" in problem
    assert "did you mean 'rabbit'?" in problem


def test_duplicate_route_name(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("name: pricing-rpc", "name: orders-to-nats"))
    assert ":46:5: routes[2].name: duplicate route name 'orders-to-nats'" in problem
    assert "routes[0]" in problem


def test_unset_environment_variable(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path,
        RABBIT.replace(
            "${env:NATSBRIDGE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}",
            "${env:NATSBRIDGE_TEST_UNSET_URL}",
        ),
    )
    assert ":12:10: connections.rabbit.url: " in problem
    assert "environment variable NATSBRIDGE_TEST_UNSET_URL is not set" in problem


def test_yaml_syntax_error_gives_parser_position(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit('      binding_keys: ["#"]', '      binding_keys: ["#"'))
    assert re.search(r"bridge\.yaml:\d+:\d+: invalid YAML", problem), problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = RABBIT
    for old, new in [
        ("exchange: orders", "exchnage: orders"),
        ("delivery: at_most_once", "delivery: sometimes"),
        ('subject: "pricing.quote"', 'subject: "foo.>.bar"'),
        (
            "connection: rabbit\n      exchange: shipments",
            "connection: rabit\n      exchange: shipments",
        ),
        ("name: pricing-rpc", "name: orders-to-nats"),
        ("${env:NATSBRIDGE_NATS_URL:-nats://127.0.0.1:4222}", "${env:NATSBRIDGE_TEST_UNSET}"),
    ]:
        text = edit(old, new, text)
    problems = problems_of(tmp_path, text)
    joined = "\n".join(problems)
    for needle in [
        "routes[0].from.exchnage",
        "routes[2].delivery",
        "routes[2].from.subject",
        "routes[1].to.connection",
        "routes[2].name",
        "connections.nats.servers[0]",
    ]:
        assert needle in joined
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines), "problems are reported in file order"


def test_exactly_once_needs_jetstream_or_kafka(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("delivery: at_most_once", "delivery: exactly_once"))
    assert "routes[2].delivery: exactly_once needs a JetStream sink" in problem


def test_request_reply_needs_a_reply_capable_pair(tmp_path: Path) -> None:
    text = edit(
        "    delivery: at_least_once\n\n  # A NATS",
        "    request_reply: {}\n    delivery: at_least_once\n\n  # A NATS",
    )
    [problem] = problems_of(tmp_path, text)
    assert "routes[1].request_reply: request_reply needs a core NATS source" in problem


def test_request_reply_bridges_two_kinds(tmp_path: Path) -> None:
    text = edit(
        '      connection: rabbit\n      exchange: ""\n      routing_key: pricing_rpc',
        '      connection: nats\n      subject: "pricing.backend"',
    )
    [problem] = problems_of(tmp_path, text)
    assert "routes[2].request_reply: request_reply needs" in problem
    assert "of another kind; found core NATS -> core NATS" in problem


def test_placeholder_not_available_from_the_source_kind(tmp_path: Path) -> None:
    text = edit('"legacy.orders.{{routing_key}}"', '"legacy.orders.{{partition}}"')
    [problem] = problems_of(tmp_path, text)
    assert "routes[0].to.subject" in problem and "partition" in problem
    assert ":26:" in problem


def test_core_nats_at_least_once_warns(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(edit("delivery: at_most_once", "delivery: at_least_once"))
    config = load_config(path, {})
    [warning] = config.warnings
    assert "routes[2].delivery: at_least_once from core NATS starts at the buffer" in warning


def test_missing_sections_and_wrong_version(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "version: 2\nroutes: []\n")
    joined = "\n".join(problems)
    assert "version: expected version: 1, found 2" in joined
    assert "missing required section 'bridge'" in joined
    assert "connections: expected a mapping of named connections" in joined
    assert "routes: expected a list of routes" in joined


def test_unknown_connection_kind(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, edit("kind: amqp", "kind: amqpp"))
    assert ":11:5: connections.rabbit.kind: expected kind one of " in problem
    installed = problem.split("expected kind one of ")[1].split(", found")[0].split(", ")
    assert {"amqp", "kafka", "stomp", "nats"} <= set(installed)  # every installed kind
    assert "did you mean 'amqp'?" in problem


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path,
        edit(
            "    delivery: at_most_once", "    delivery: at_most_once\n    delivery: at_most_once"
        ),
    )
    assert "routes[2].delivery: duplicate key 'delivery'" in problem


def test_an_empty_admin_token_is_a_problem_not_authentication_off(tmp_path: Path) -> None:
    text = edit(
        "  id: example-dc1 ", "  admin: {token: '${env:ADMIN_TOKEN:-}'}\n  id: example-dc1 "
    )
    [problem] = problems_of(tmp_path, text)
    assert "bridge.admin.token: an empty token would turn authentication off" in problem


def test_core_nats_sink_at_least_once_warns_like_a_core_nats_source(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections:\n"
        "  rabbit: {kind: amqp, url: 'amqp://127.0.0.1/'}\n"
        "  nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}\n"
        "routes:\n"
        "  - name: to-core\n"
        "    from: {connection: rabbit, queue: q}\n"
        "    to: {connection: nats, subject: s}\n"
        "  - name: to-stream\n"
        "    from: {connection: rabbit, queue: q2}\n"
        "    to: {connection: nats, subject: t, jetstream: {stream: T}}\n"
        "  - name: to-core-lossy\n"
        "    from: {connection: rabbit, queue: q3}\n"
        "    to: {connection: nats, subject: u}\n"
        "    delivery: at_most_once\n"
    )
    [warning] = load_config(path, {}).warnings
    assert "bridge.yaml:7:5: routes[0].delivery: at_least_once to core NATS ends at the" in warning
