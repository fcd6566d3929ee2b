"""The `migrations:` section: routes derived per phase, problems at the migration's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.schema import json_schema
from natsbridge.bridge.errors import ConfigError
from natsbridge.bridge.migrate import state
from natsbridge.bridge.migrate.derive import stream_filter
from natsbridge.bridge.migrate.model import Phase
from natsbridge.connectors.amqp.config import AmqpSink, AmqpSource
from natsbridge.connectors.kafka.config import KafkaSink
from natsbridge.connectors.nats.config import NatsSink, NatsSource
from natsbridge.mappings.subjects import match
from tests.migrate.conftest import MIGRATIONS, write


def problems(tmp_path: Path, old: str, new: str) -> list[str]:
    assert old in MIGRATIONS, old
    path = write(tmp_path, MIGRATIONS.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return info.value.problems


def test_the_example_validates_in_every_phase() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "migrate-orders.yaml"
    for phase in Phase:
        config = load_config(example, {}, phases={"orders": phase})
        assert config.migrations[0].phase is phase and not config.warnings


def test_mirror_derives_the_tap_route_only(config_file: Path) -> None:
    config = load_config(config_file, {})
    assert [route.name for route in config.routes] == ["orders.to-nats", "clicks.to-nats"]
    orders = config.routes[0]
    assert isinstance(orders.source, AmqpSource) and orders.source.exchange == "orders"
    assert isinstance(orders.sink, NatsSink) and orders.sink.jetstream is not None
    assert orders.sink.jetstream.stream == "ORDERS"
    assert [m.phase for m in config.migrations] == [Phase.MIRROR, Phase.MIRROR]


@pytest.mark.parametrize(
    ("phase", "routes"),
    [
        (Phase.VERIFY, ["orders.to-nats"]),
        (Phase.CUTOVER, ["orders.to-nats", "orders.to-legacy"]),
        (Phase.RETIRE, ["orders.to-nats"]),
        (Phase.DONE, []),
    ],
)
def test_each_phase_derives_its_routes(config_file: Path, phase: Phase, routes: list[str]) -> None:
    config = load_config(config_file, {}, phases={"orders": phase})
    assert [r.name for r in config.routes if r.name.startswith("orders.")] == routes
    assert config.migrations[0].route_names == tuple(routes)


def test_cutover_feeds_the_legacy_exchange_from_a_durable_consumer(config_file: Path) -> None:
    config = load_config(config_file, {}, phases={"orders": Phase.CUTOVER, "clicks": Phase.CUTOVER})
    back = {route.name: route for route in config.routes}
    orders = back["orders.to-legacy"]
    assert isinstance(orders.source, NatsSource) and orders.source.jetstream is not None
    assert orders.source.subject == "legacy.orders.>"
    assert orders.source.jetstream.durable == "natsbridge-orders-to-legacy"
    assert isinstance(orders.sink, AmqpSink)
    assert (orders.sink.exchange, orders.sink.routing_key) == ("orders", "{{subject}}")
    clicks = back["clicks.to-legacy"]
    assert isinstance(clicks.sink, KafkaSink) and clicks.sink.topic == "clicks"


def test_the_recorded_phase_wins_over_the_written_one(config_file: Path) -> None:
    data_dir = config_file.parent / "data"
    with state.locked(data_dir):
        state.record(data_dir, "orders", Phase.MIRROR, Phase.CUTOVER, who="cli")
    config = load_config(config_file, {})
    assert config.migrations[0].phase is Phase.CUTOVER
    assert "orders.to-legacy" in [route.name for route in config.routes]


def test_a_damaged_state_file_is_one_clear_problem(config_file: Path) -> None:
    path = state.state_dir(config_file.parent / "data") / state.STATE_FILE
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "migrations": {"orders": {"phase": "sideways"}}}')
    with pytest.raises(ConfigError) as info:
        load_config(config_file, {})
    [problem] = info.value.problems
    assert "bridge.data_dir: " in problem and "damaged migration state" in problem


def test_routes_may_be_empty_but_not_both(tmp_path: Path) -> None:
    head = MIGRATIONS[: MIGRATIONS.index("migrations:")]
    assert load_config(write(tmp_path, head + "routes: []\n" + MIGRATIONS[len(head) :]), {})
    path = write(tmp_path, head + "routes: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    [problem] = info.value.problems
    assert "routes: expected a list of routes (or a `migrations` section), found a list" in problem


@pytest.mark.parametrize(
    ("old", "new", "where", "says"),
    [
        ("binding_keys:", "binding_key:", "migrations[0].legacy.binding_key", "did you mean"),
        ("connection: rabbit", "connection: rabit", "migrations[0].legacy.connection", "rabbit"),
        ("stream: ORDERS", "stream: OR.DERS", "migrations[0].nats.stream", "'.'"),
        ("phase: mirror", "phase: sideways", "migrations[0].phase", "'cutover'"),
        ('routing_key}}}}"\n', 'nope}}}}"\n', "migrations[0].nats.subject", "nope"),
        ("name: orders", "name: orders/x", "migrations[0].name", "pattern"),
        ("max_lag: 10", "max_lag: -1", "migrations[0].verify.max_lag", "greater than"),
        ("connection: nats\n", "connection: natz\n", "migrations[0].nats.connection", "natz"),
    ],
)
def test_problems_are_located_at_the_migration_keys(
    tmp_path: Path, old: str, new: str, where: str, says: str
) -> None:
    found = problems(tmp_path, old, new)
    assert len(found) == 1, found
    assert f": {where}: " in found[0] and says in found[0], found[0]
    assert ":" in found[0].split(": ")[0]  # file:line:column


def test_a_missing_back_field_is_reported_when_its_phase_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, MIGRATIONS.replace('    back: {{routing_key: "{{{{subject}}}}"}}\n', ""))
    assert load_config(path, {}).migrations[0].phase is Phase.MIRROR
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, phases={"orders": Phase.CUTOVER})
    [problem] = info.value.problems
    assert "migrations[0].back.routing_key: missing required key 'routing_key'" in problem


def test_a_derived_name_taken_by_a_route_is_refused(tmp_path: Path) -> None:
    route = (
        "routes:\n  - name: orders.to-nats\n"
        "    from: {connection: nats, subject: a}\n    to: {connection: nats, subject: b}\n"
    )
    text = MIGRATIONS.replace(
        "migrations:\n", route.replace("{", "{{").replace("}", "}}") + "migrations:\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    [problem] = info.value.problems
    assert "migrations[0].name: route 'orders.to-nats' is also routes[0]" in problem


def test_the_schema_describes_migrations() -> None:
    schema = json_schema()
    assert schema["properties"]["migrations"]["items"] == {"$ref": "#/$defs/MigrationSpec"}
    spec = schema["$defs"]["MigrationSpec"]
    assert spec["required"] == ["name", "legacy", "nats"]
    assert {"$ref": "#/$defs/AmqpSource"} in spec["properties"]["legacy"]["anyOf"]


TOKEN = st.text(alphabet="abcXYZ09_-", min_size=1, max_size=5)


@given(
    st.lists(TOKEN, min_size=1, max_size=4),
    st.sampled_from(["{{routing_key}}", "{{topic}}", "x{{key}}"]),
    st.lists(TOKEN, max_size=3),
    st.lists(TOKEN, min_size=1, max_size=3),
)
def test_the_filter_matches_every_subject_the_template_renders(
    prefix: list[str], placeholder: str, suffix: list[str], rendered: list[str]
) -> None:
    template = ".".join([*prefix, placeholder, *suffix])
    subject = ".".join([*prefix, *rendered, *suffix])
    assert match(stream_filter(template), subject) is not None
    assert stream_filter(".".join(prefix)) == ".".join(prefix)


@pytest.mark.parametrize(
    ("connection", "legacy", "written_back"),
    [
        (
            "{kind: amqp, url: 'amqp://h/%2F'}",
            "{queue: jobs}",
            {"exchange": "", "routing_key": "jobs"},
        ),
        ("{kind: kafka, bootstrap_servers: [h:9092]}", "{topics: [a]}", {"topic": "a"}),
        (
            "{kind: stomp, url: 'stomp://h:61613', dialect: activemq}",
            "{destination: /queue/q}",
            {"destination": "/queue/q"},
        ),
        ("{kind: mqtt, url: 'mqtt://h:1883'}", "{topics: [s/t]}", {"topic": "s/t", "qos": 1}),
    ],
)
def test_each_legacy_kind_is_written_back_where_it_is_read(
    tmp_path: Path, connection: str, legacy: str, written_back: dict[str, object]
) -> None:
    text = (
        "version: 1\nbridge: {id: b, data_dir: " + str(tmp_path / "data") + "}\n"
        "connections:\n  old: "
        + connection
        + "\n  nats: {kind: nats, servers: ['nats://h:4222']}\n"
        "migrations:\n  - name: m\n    phase: cutover\n"
        "    legacy: {connection: old, " + legacy[1:] + "\n"
        "    nats: {connection: nats, subject: 'legacy.m', stream: M}\n"
    )
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    back = {route.name: route for route in load_config(path, {}).routes}["m.to-legacy"]
    for key, value in written_back.items():
        assert getattr(back.sink, key) == value


def test_a_legacy_side_with_wildcards_needs_back(tmp_path: Path) -> None:
    text = (
        "version: 1\nbridge: {id: b, data_dir: " + str(tmp_path / "data") + "}\n"
        "connections:\n  old: {kind: mqtt, url: 'mqtt://h:1883'}\n"
        "  nats: {kind: nats, servers: ['nats://h:4222']}\n"
        "migrations:\n  - name: m\n    phase: cutover\n"
        "    legacy: {connection: old, topics: [s/+]}\n"
        "    nats: {connection: nats, subject: 'legacy.m', stream: M}\n"
    )
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    [problem] = info.value.problems
    assert "migrations[0].back.topic: missing required key 'topic'" in problem
