"""`buffer: none` is refused where a message would not be safe without a copy, at the end
that cannot keep it, saying why; each kind declares its capable endpoints (the SDK)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.model import BufferMode
from natsbridge.bridge.errors import ConfigError

CONNECTIONS = (
    "connections:\n"
    "  nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}\n"
    "  rabbit: {kind: amqp, url: 'amqp://guest:guest@127.0.0.1:5672/'}\n"
    "  kafka: {kind: kafka, bootstrap_servers: ['127.0.0.1:9092']}\n"
    "  mqtt: {kind: mqtt, url: 'mqtt://127.0.0.1:1883'}\n"
    "  stomp: {kind: stomp, url: 'stomp://127.0.0.1:61613', dialect: rabbitmq}\n"
)
JETSTREAM_SINK = "{connection: nats, subject: out, jetstream: {stream: OUT}}"
SOURCES = {
    "amqp": "{connection: rabbit, queue: q}",
    "kafka": "{connection: kafka, topics: [t]}",
    "jetstream": "{connection: nats, subject: 'in.>', jetstream: {stream: IN}}",
    "mqtt qos 1": "{connection: mqtt, topics: [a/b], qos: 1}",
    "stomp": "{connection: stomp, destination: /queue/q}",
}


def config(source: str, sink: str, route_extra: str = "", bridge_buffer: str = "none") -> str:
    return (
        f"version: 1\nbridge: {{id: b, buffer: {bridge_buffer}}}\n{CONNECTIONS}routes:\n"
        f"  - name: r\n    from: {source}\n    to: {sink}\n{route_extra}"
    )


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_durable_source_into_jetstream_is_taken(tmp_path: Path, source: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(config(SOURCES[source], JETSTREAM_SINK))
    [route] = load_config(path, {}).routes
    assert route.buffer.mode is BufferMode.NONE


def test_core_nats_source_is_refused_at_from_saying_why(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, config("{connection: nats, subject: 'in.>'}", JETSTREAM_SINK))
    assert problem.startswith("11:")  # the route's `from:` line
    assert "routes[0].from" in problem
    assert "buffer none (from bridge.buffer) keeps no copy" in problem
    assert "must redeliver what it did not see acked" in problem
    assert "found a core NATS source, which does not" in problem
    assert "a JetStream source (from.jetstream)" in problem and "a Kafka source" in problem


def test_mqtt_qos_0_source_is_refused(tmp_path: Path) -> None:
    text = config("{connection: mqtt, topics: [a/b], qos: 0}", JETSTREAM_SINK)
    [problem] = problems(tmp_path, text)  # the kind's own check says it first
    assert "routes[0].from.qos: qos 0 is at most once (the broker never redelivers)" in problem


def test_core_nats_sink_is_refused_at_to(tmp_path: Path) -> None:
    text = config(SOURCES["amqp"], "{connection: nats, subject: out}", "    buffer: none\n")
    [problem] = problems(tmp_path, text)
    assert "routes[0].to" in problem
    assert "buffer none acks the source once the sink confirmed" in problem
    assert "found a core NATS sink, which does not confirm" in problem


def test_exactly_once_needs_a_buffer(tmp_path: Path) -> None:
    text = config(SOURCES["kafka"], JETSTREAM_SINK, "    delivery: exactly_once\n")
    [problem] = problems(tmp_path, text)
    assert "routes[0].delivery" in problem and "cannot give exactly_once" in problem


def test_a_route_that_buffers_is_not_held_to_it(tmp_path: Path) -> None:
    core = "{connection: nats, subject: 'in.>'}"
    text = config(core, "{connection: nats, subject: out}", "    buffer: embedded\n")
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    assert load_config(path, {}).routes[0].buffer.mode is BufferMode.EMBEDDED
    at_most_once = config(core, JETSTREAM_SINK, "    delivery: at_most_once\n")
    path.write_text(at_most_once)
    assert load_config(path, {}).routes[0].buffer.mode is BufferMode.NONE
