"""A connector kind from outside the repository loads, validates, maps, runs and fails well."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.describe import describe_route
from natsbridge.bridge.config.schema import json_schema
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConfigError, MappingError
from natsbridge.bridge.runtime.bridge import Bridge
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.connectors.nats.kind import NatsOrigin
from tests.sdk import pigeon

pytestmark = pytest.mark.usefixtures("pigeon_installed")

CONFIG = """\
version: 1
bridge:
  id: sdk-test
  data_dir: {data_dir}
  admin: {{enabled: false}}
connections:
  loft:
    kind: pigeon
    loft: north
  nats:
    kind: nats
    servers: ["nats://127.0.0.1:4222"]
routes:
  - name: pigeons-to-nats
    from: {{connection: loft, coops: ["birds/+/in"]}}
    to: {{connection: nats, subject: "birds.{{{{wildcard(1)}}}}.{{{{ring}}}}"}}
    delivery: at_least_once
  - name: nats-to-pigeons
    from: {{connection: nats, subject: "mail.*"}}
    to: {{connection: loft, coop: "birds/{{{{wildcard(1)}}}}/out"}}
    delivery: at_most_once
  - name: pigeons-to-pigeons
    from: {{connection: loft, coops: ["inbox/+"]}}
    to: {{connection: loft, coop: "outbox/{{{{wildcard(1)}}}}"}}
    delivery: exactly_once
"""


def write(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text or CONFIG.format(data_dir=tmp_path / "data"))
    return path


def problems(tmp_path: Path, old: str, new: str) -> list[str]:
    text = CONFIG.format(data_dir=tmp_path / "data")
    assert old in text, old
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text.replace(old, new, 1)), {})
    return info.value.problems


def test_a_third_party_kind_validates_and_describes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path), {})
    assert [r.source_kind for r in config.routes] == ["pigeon", "nats", "pigeon"]
    assert isinstance(config.connections["loft"], pigeon.PigeonConnection)
    assert isinstance(config.routes[0].source, pigeon.PigeonSource)
    assert describe_route(config.routes[0]) == (
        "pigeons-to-nats: loft:coops birds/+/in -> nats:subject birds.{{wildcard(1)}}.{{ring}} "
        "(at_least_once)"
    )


def test_its_placeholders_wildcards_checks_and_dedup_id_drive_the_mapper(tmp_path: Path) -> None:
    config = load_config(write(tmp_path), {})
    into_nats, into_pigeons, once = (
        RouteMapper(route, config.bridge, config.connections[route.sink.connection])
        for route in config.routes
    )
    bird = Envelope("x", b"", origin=pigeon.PigeonOrigin("loft", "pigeon", "birds/eu west/in", 7))
    assert into_nats.map(bird).subject == "birds.eu%20west.7"  # foreign values escaped
    mail = Envelope("mail.eu", b"", origin=NatsOrigin("nats", "nats", "mail.eu"))
    assert into_pigeons.map(mail).subject == "birds/eu/out"
    with pytest.raises(MappingError, match="no spaces"):  # the sink kind's address check
        into_pigeons.map(Envelope("mail.a b", b"", origin=NatsOrigin("n", "nats", "mail.a b")))
    boxed = Envelope("x", b"", origin=pigeon.PigeonOrigin("loft", "pigeon", "inbox/a", 3))
    assert once.map(boxed).msg_id == "pigeon:inbox/a:3"


def test_its_models_and_checks_report_like_the_built_in_kinds(tmp_path: Path) -> None:
    [typo] = problems(tmp_path, 'coops: ["birds/+/in"]', 'coopz: ["birds/+/in"]')
    assert "routes[0].from.coopz: unknown key 'coopz' — did you mean 'coops'?" in typo
    [hawk] = problems(tmp_path, 'coop: "birds/{{wildcard(1)}}/out"', "coop: hawk")
    assert "routes[1].to.coop: a pigeon never flies to the hawk" in hawk
    [ring] = problems(tmp_path, 'coop: "birds/{{wildcard(1)}}/out"', 'coop: "{{ring}}"')
    assert "routes[1].to.coop" in ring
    assert (
        "{{ring}} is only available from a pigeon source, and this route's source is nats" in ring
    )
    [stars] = problems(tmp_path, '"birds.{{wildcard(1)}}', '"birds.{{wildcard(2)}}')
    assert "wildcard 2 is out of range, the source pattern 'birds/+/in' has 1 '*'" in stars
    [once] = problems(tmp_path, "delivery: at_least_once", "delivery: exactly_once")
    assert (
        "routes[0].delivery: exactly_once needs a JetStream sink (to.jetstream) or a Kafka sink "
        "or a pigeon sink; found a core NATS sink"
    ) in once


def test_an_unknown_kind_suggests_and_lists_the_installed_ones(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "kind: pigeon", "kind: pigeonn")
    assert "connections.loft.kind: expected kind one of " in problem
    assert "did you mean 'pigeon'?" in problem
    listed = problem.split("expected kind one of ")[1].split(", found")[0].split(", ")
    assert {"amqp", "kafka", "nats", "stomp", "pigeon"} <= set(listed)


def test_the_schema_offers_its_models() -> None:
    schema = json_schema()
    (named,) = schema["properties"]["connections"]["patternProperties"].values()
    assert {"$ref": "#/$defs/PigeonConnection"} in named["anyOf"]
    route = schema["$defs"]["RouteSpec"]["properties"]
    assert {"$ref": "#/$defs/PigeonSource"} in route["from"]["anyOf"]
    assert {"$ref": "#/$defs/PigeonSink"} in route["to"]["anyOf"]


def test_a_route_between_pigeon_lofts_runs(tmp_path: Path) -> None:
    text = CONFIG.format(data_dir=tmp_path / "data")
    first, last = (
        text.index("  - name: pigeons-to-nats"),
        text.index("  - name: pigeons-to-pigeons"),
    )
    config = load_config(write(tmp_path, text[:first] + text[last:]), {})
    pigeon.LOFTS["inbox/a"] = [Envelope("inbox/a", b"1"), Envelope("inbox/a", b"2")]
    pigeon.LOFTS["inbox/b c"] = [Envelope("inbox/b c", b"3")]  # to "outbox/b c": refused
    bridge = Bridge(config)
    asyncio.run(bridge.run(once=True))
    assert [e.payload for e in pigeon.LOFTS.pop("outbox/a")] == [b"1", b"2"]
    assert pigeon.LOFTS == {}
    assert pigeon.SETTLED == [None, None, None]  # every message acked at its source
    assert bridge.runners[0].stats.delivered == 2
    assert sum(bridge.runners[0].stats.dead_lettered.values()) == 1
