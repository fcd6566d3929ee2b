"""The route mapping step: addresses, loop prevention, hop limit, dedup ids, limits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.config import Config, load_config
from natsbridge.bridge.config.model import Retry
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import HopLimitExceeded, MappingError, PayloadTooLarge
from natsbridge.bridge.runtime.backoff import Backoff
from natsbridge.bridge.runtime.mapper import LoopDetected, RouteMapper, dedup_id
from natsbridge.bridge.runtime.stats import LATENCY_BUCKETS_S, Latency, RouteStats
from natsbridge.connectors.amqp.kind import AmqpOrigin
from natsbridge.connectors.amqp.kind import connector as amqp_kind
from natsbridge.connectors.kafka.kind import KafkaOrigin
from natsbridge.connectors.nats.kind import NatsOrigin
from natsbridge.connectors.nats.kind import connector as nats_kind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def mapper_for(config: Config, route_name: str) -> RouteMapper:
    route = next(r for r in config.routes if r.name == route_name)
    return RouteMapper(route, config.bridge, config.connections[route.sink.connection])


@pytest.fixture(scope="module")
def rabbit() -> Config:
    return load_config(EXAMPLES / "rabbitmq-nats.yaml", {})


@pytest.fixture(scope="module")
def kafka() -> Config:
    return load_config(EXAMPLES / "kafka-nats.yaml", {})


def amqp_message(routing_key: str, **headers: list[str]) -> Envelope:
    origin = AmqpOrigin("rabbit", "amqp", exchange="orders", routing_key=routing_key)
    return Envelope(subject=routing_key, payload=b"p", headers=dict(headers), origin=origin)


def test_renders_the_target_and_stamps_the_hop(rabbit: Config) -> None:
    mapped = mapper_for(rabbit, "orders-to-nats").map(amqp_message("eu.created", X=["1"]))
    assert mapped.subject == "legacy.orders.eu.created"
    assert mapped.headers["Bridge-Origin"] == ["example-dc1/rabbit"]
    assert mapped.headers["Bridge-Hops"] == ["1"]
    assert mapped.headers["X"] == ["1"]
    assert "Nats-Msg-Id" not in mapped.headers  # at_least_once


def test_a_message_this_bridge_took_from_the_target_is_not_sent_back(rabbit: Config) -> None:
    came_back = Envelope(
        subject="shipments.eu",
        payload=b"p",
        headers={"Bridge-Origin": ["example-dc1/rabbit"], "Bridge-Hops": ["1"]},
        origin=NatsOrigin("nats", "nats", subject="shipments.eu"),
    )
    with pytest.raises(LoopDetected):
        mapper_for(rabbit, "shipments-to-rabbit").map(came_back)


def test_another_bridges_message_passes_and_keeps_its_trail(rabbit: Config) -> None:
    passing = Envelope(
        subject="shipments.eu",
        payload=b"p",
        headers={"Bridge-Origin": ["dc2/rabbit"], "Bridge-Hops": ["1"]},
        origin=NatsOrigin("nats", "nats", subject="shipments.eu"),
    )
    mapped = mapper_for(rabbit, "shipments-to-rabbit").map(passing)
    assert mapped.headers["Bridge-Origin"] == ["dc2/rabbit", "example-dc1/nats"]
    assert mapped.headers["Bridge-Hops"] == ["2"]
    assert mapped.subject == "eu"


def test_hop_limit(rabbit: Config) -> None:
    mapper = mapper_for(rabbit, "orders-to-nats")
    with pytest.raises(HopLimitExceeded, match="hop limit is 8"):
        mapper.map(amqp_message("a", **{"Bridge-Hops": ["8"]}))
    with pytest.raises(MappingError, match="not a number"):
        mapper.map(amqp_message("a", **{"Bridge-Hops": ["many"]}))


def test_route_payload_limit(tmp_path: Path) -> None:
    text = (EXAMPLES / "rabbitmq-nats.yaml").read_text()
    text = text.replace(
        "    delivery: at_least_once\n", "    delivery: at_least_once\n    max_payload: 10\n", 1
    )
    (tmp_path / "c.yaml").write_text(text)
    mapper = mapper_for(load_config(tmp_path / "c.yaml", {}), "orders-to-nats")
    mapper.map(Envelope("k", b"x" * 10, origin=AmqpOrigin("rabbit", "amqp", routing_key="k")))
    with pytest.raises(PayloadTooLarge):
        mapper.map(Envelope("k", b"x" * 11, origin=AmqpOrigin("rabbit", "amqp", routing_key="k")))


def test_exactly_once_ids_come_from_kafka_coordinates(kafka: Config) -> None:
    record = Envelope(
        subject="clicks",
        payload=b"p",
        origin=KafkaOrigin("kafka", "kafka", topic="clicks", partition=4, offset=17),
    )
    mapped = mapper_for(kafka, "clicks-to-nats").map(record)
    assert mapped.subject == "kafka.clicks.4"
    assert mapped.msg_id == "kafka:clicks:4:17"
    assert mapped.headers["Nats-Msg-Id"] == ["kafka:clicks:4:17"]


def test_dedup_id_sources() -> None:
    amqp = Envelope("s", b"", msg_id="m-1", origin=AmqpOrigin("r", "amqp"))
    assert dedup_id(amqp_kind, amqp) == "m-1"
    seq = Envelope("s", b"", origin=NatsOrigin("n", "nats", subject="a.b", stream_seq=9))
    assert dedup_id(nats_kind, seq) == "jetstream:n:a.b:9"
    with pytest.raises(MappingError, match="stable message id"):
        dedup_id(amqp_kind, Envelope("s", b"", origin=AmqpOrigin("r", "amqp")))


def test_dedup_ids_are_header_safe_and_distinct() -> None:
    hostile = "id\r\nNats-Expected-Stream: OTHER"
    ids = {
        dedup_id(amqp_kind, Envelope("s", b"", msg_id=m, origin=AmqpOrigin("r", "amqp")))
        for m in (hostile, "id", " id", "\udcffid", "base64:aWQ=")
    }
    assert len(ids) == 5
    assert all(i.isprintable() and i == i.strip() for i in ids)


def test_outside_exactly_once_nothing_deduplicates(rabbit: Config) -> None:
    carried = amqp_message("eu.created", **{"Nats-Msg-Id": ["order-42"]})
    carried.msg_id = "order-42"
    mapped = mapper_for(rabbit, "orders-to-nats").map(carried)  # at_least_once
    assert mapped.msg_id is None  # neither the buffer nor JetStream dedups on it
    assert "Nats-Msg-Id" not in mapped.headers
    assert mapped.headers["%4Eats-Msg-Id"] == ["order-42"]


def test_an_address_that_is_not_utf8_is_a_mapping_error(rabbit: Config) -> None:
    mapper = mapper_for(rabbit, "shipments-to-rabbit")  # routing_key: "{{wildcard(1)}}"
    message = Envelope(
        "shipments.\udcff", b"", origin=NatsOrigin("nats", "nats", subject="shipments.\udcff")
    )
    with pytest.raises(MappingError, match="not UTF-8"):
        mapper.map(message)


def test_kafka_key_and_topic_are_rendered_and_checked(kafka: Config) -> None:
    mapper = mapper_for(kafka, "telemetry-to-kafka")
    message = Envelope(
        "telemetry.dev42.cpu", b"", origin=NatsOrigin("nats", "nats", subject="telemetry.dev42.cpu")
    )
    mapped = mapper.map(message)
    assert (mapped.subject, mapped.key) == ("telemetry", b"dev42")


@given(st.text(min_size=0, max_size=60))
def test_any_routing_key_maps_to_a_valid_subject_or_a_mapping_error(routing_key: str) -> None:
    config = load_config(EXAMPLES / "rabbitmq-nats.yaml", {})
    mapper = mapper_for(config, "orders-to-nats")
    try:
        mapped = mapper.map(amqp_message(routing_key))
    except MappingError:
        return
    assert mapped.subject.startswith("legacy.orders.")
    assert " " not in mapped.subject and ".." not in mapped.subject


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(Retry(initial=0.1, max=1.0, multiplier=2.0), random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.1


def test_latency_histogram_and_rates() -> None:
    latency = Latency()
    for seconds in (0.0005, 0.003, 0.003, 100.0):
        latency.observe(seconds)
    assert latency.counts[0] == 1 and latency.counts[1] == 2 and latency.counts[-1] == 1
    assert len(latency.counts) == len(LATENCY_BUCKETS_S) + 1
    stats = RouteStats()
    stats.sample(0.0)
    stats.received, stats.delivered = 100, 50
    stats.sample(10.0)
    assert (stats.rate_in, stats.rate_out) == (10.0, 5.0)


def test_an_invalid_address_is_refused_every_time_a_valid_one_is_remembered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections:\n"
        "  nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}\n"
        "  rabbit: {kind: amqp, url: 'amqp://127.0.0.1/'}\n"
        "routes:\n"
        "  - {name: out, from: {connection: nats, subject: 'in.>'},\n"
        "     to: {connection: rabbit, exchange: x, routing_key: '{{subject}}'}}\n"
    )
    mapper = mapper_for(load_config(path, {}), "out")
    too_long = "in." + "k" * 300
    for _ in range(2):
        with pytest.raises(MappingError):
            mapper.map(Envelope(too_long, b"", origin=NatsOrigin("nats", "nats", subject=too_long)))
        ok = mapper.map(Envelope("in.a", b"", origin=NatsOrigin("nats", "nats", subject="in.a")))
        assert ok.subject == "in.a"
