"""Benchmark of the pure mapping layer on one core: template renders and envelope translations.

Run: ``python -m bench templates`` (or ``python bench/templates.py``). Prints one JSON object
and writes it to ``bench/results/templates.json``.

* ``renders_per_s``: ``kafka.{{topic}}.{{partition}}`` (Kafka → NATS, two placeholders,
  with subject validation) rendered in a loop; ``renders`` lists other templates.
* ``translations_per_s``: a full AMQP → NATS envelope translation: render the subject,
  AMQP properties and a typed header table to NATS headers, source-coordinate headers,
  the payload limit check, and a new Envelope; ``translations`` lists Kafka → NATS and
  NATS → Kafka as well.

Each figure is the median of several timed runs, pinned to one CPU where the OS allows,
counted per CPU second of this process (``*_wall`` fields: per wall-clock second).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from natsbridge.bridge.envelope import Envelope
from natsbridge.connectors.amqp.kind import AmqpOrigin
from natsbridge.connectors.kafka.kind import KafkaOrigin
from natsbridge.connectors.nats.kind import NatsOrigin
from natsbridge.mappings import headers as h
from natsbridge.mappings import kafka
from natsbridge.mappings.amqp_properties import properties_to_headers
from natsbridge.mappings.payload import DEFAULT_MAX_PAYLOAD_BYTES, check_payload
from natsbridge.mappings.templates import Template, compile_template

RESULT = Path(__file__).resolve().parent / "results" / "templates.json"
RUNS = 5
TARGET_SECONDS = 0.3  # per run


def _rate(fn: Callable[[], object]) -> tuple[float, float]:
    """Median calls/s of `fn` over RUNS runs: per CPU second, and per wall-clock second.

    CPU time counts only the time this process ran, so the first figure is what one core
    does even when other processes share the machine; the wall figure is kept to show
    how much they did.
    """
    n = 1000
    while True:  # calibrate the batch size
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > TARGET_SECONDS / 4:
            break
        n *= 4
    batch = max(1000, int(n * TARGET_SECONDS / elapsed))
    cpu_rates, wall_rates = [], []
    for _ in range(RUNS):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(batch):
            fn()
        cpu_rates.append(batch / max(time.process_time() - cpu, 1e-9))
        wall_rates.append(batch / (time.perf_counter() - wall))
    return statistics.median(cpu_rates), statistics.median(wall_rates)


def _render_cases() -> dict[str, tuple[Template, Envelope]]:
    kafka_env = Envelope(
        "clicks", b"x", origin=KafkaOrigin("kafka", "kafka", topic="clicks", partition=3, offset=9)
    )
    amqp_env = Envelope(
        "eu.created",
        b"x",
        {"X-Tenant": ["acme"]},
        origin=AmqpOrigin("rabbit", "amqp", exchange="orders", routing_key="eu.created"),
    )
    nats_env = Envelope(
        "telemetry.dev42.cpu",
        b"x",
        origin=NatsOrigin("nats", "nats", subject="telemetry.dev42.cpu"),
    )
    return {
        "kafka.{{topic}}.{{partition}}": (
            compile_template(
                "kafka.{{topic}}.{{partition}}", source_kind="kafka", target_kind="nats"
            ),
            kafka_env,
        ),
        "legacy.{{routing_key}}.{{header(X-Tenant)}}": (
            compile_template(
                "legacy.{{routing_key}}.{{header(X-Tenant)}}",
                source_kind="amqp",
                target_kind="nats",
            ),
            amqp_env,
        ),
        "t.{{wildcard(2)}}.{{partition(8,1)}} (nats→nats)": (
            compile_template(
                "t.{{wildcard(2)}}.{{partition(8,1)}}",
                source_kind="nats",
                source_patterns=["telemetry.*.*"],
                target_kind="nats",
            ),
            nats_env,
        ),
        "{{wildcard(1)}} (nats→kafka key)": (
            compile_template(
                "{{wildcard(1)}}",
                source_kind="nats",
                source_patterns=["telemetry.*.*"],
                target_kind="kafka",
            ),
            nats_env,
        ),
    }


def _renderer(template: Template, env: Envelope) -> Callable[[], object]:
    return lambda: template.render(env)


def _amqp_to_nats() -> Callable[[], object]:
    template = compile_template(
        "legacy.orders.{{routing_key}}",
        source_kind="amqp",
        source_patterns=["#"],
        target_kind="nats",
    )
    origin = AmqpOrigin("rabbit", "amqp", exchange="orders", routing_key="eu.created", queue="q")
    env = Envelope("eu.created", b"x" * 1024, origin=origin)
    props = {
        "content_type": "application/json",
        "delivery_mode": 2,
        "priority": 5,
        "message_id": "m-1",
        "timestamp": 1_714_560_000,
    }
    table = {"x-tenant": "acme", "x-retries": 3, "x-sent": datetime(2024, 5, 1, tzinfo=UTC)}

    def translate() -> Envelope:
        subject = template.render(env)
        headers = properties_to_headers(props, table)
        headers[h.AMQP_EXCHANGE] = [h.encode_value(origin.exchange or "")]
        headers[h.AMQP_ROUTING_KEY] = [h.encode_value(origin.routing_key or "")]
        check_payload(len(env.payload), DEFAULT_MAX_PAYLOAD_BYTES)
        return Envelope(subject, env.payload, headers, origin=env.origin, timestamp=env.timestamp)

    return translate


def _kafka_to_nats() -> Callable[[], object]:
    template = compile_template(
        "kafka.{{topic}}.{{partition}}", source_kind="kafka", target_kind="nats"
    )
    origin = KafkaOrigin("kafka", "kafka", topic="clicks", partition=3, offset=123456)
    env = Envelope("clicks", b"x" * 1024, key=b"user-42", origin=origin)
    record_headers = [("traceparent", b"00-abc-def-01"), ("source", b"web")]

    def translate() -> Envelope:
        subject = template.render(env)
        headers = kafka.kafka_to_nats_headers(record_headers)
        headers.update(kafka.coordinate_headers("clicks", 3, 123456, env.key))
        check_payload(len(env.payload), DEFAULT_MAX_PAYLOAD_BYTES)
        msg_id = f"{origin.topic}:{origin.partition}:{origin.offset}"
        return Envelope(subject, env.payload, headers, msg_id=msg_id, origin=origin, key=env.key)

    return translate


def _nats_to_kafka() -> Callable[[], object]:
    key = compile_template(
        "{{wildcard(1)}}",
        source_kind="nats",
        source_patterns=["telemetry.*.*"],
        target_kind="kafka",
    )
    topic = compile_template(
        "telemetry", source_kind="nats", source_patterns=["telemetry.*.*"], target_kind="kafka"
    )
    origin = NatsOrigin("nats", "nats", subject="telemetry.dev42.cpu")
    env = Envelope(
        "telemetry.dev42.cpu",
        b"x" * 1024,
        {"Bridge-Origin": ["dc1"], "traceparent": ["00-abc-def-01"]},
        origin=origin,
    )

    def translate() -> tuple[str, bytes, list[tuple[str, bytes]]]:
        record_key = key.render(env).encode()
        record_headers = kafka.nats_to_kafka_headers(env.headers)
        check_payload(len(env.payload), DEFAULT_MAX_PAYLOAD_BYTES)
        return topic.render(env), record_key, record_headers

    return translate


def _pin_one_cpu() -> int | None:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def main(argv: Sequence[str]) -> int:
    """Run the benchmark (no options), print its JSON result and write it to bench/results/."""
    cpu = _pin_one_cpu()
    renders = {name: _rate(_renderer(t, e)) for name, (t, e) in _render_cases().items()}
    translations = {
        "amqp→nats": _rate(_amqp_to_nats()),
        "kafka→nats": _rate(_kafka_to_nats()),
        "nats→kafka": _rate(_nats_to_kafka()),
    }
    main_render = renders["kafka.{{topic}}.{{partition}}"]
    main_translation = translations["amqp→nats"]
    result = {
        "name": "templates",
        "renders_per_s": round(main_render[0]),
        "renders_goal_per_s": 300_000,
        "translations_per_s": round(main_translation[0]),
        "renders_per_s_wall": round(main_render[1]),
        "translations_per_s_wall": round(main_translation[1]),
        "renders": {name: round(cpu) for name, (cpu, _) in renders.items()},
        "translations": {name: round(cpu) for name, (cpu, _) in translations.items()},
        "msg_size": 1024,
        "pinned_cpu": cpu,
        "runs": RUNS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    text = json.dumps(result, ensure_ascii=False)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
