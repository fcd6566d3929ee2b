"""`natsbridge map`: users test their routes without brokers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def natsbridge_map(example: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", "map", "-c", str(EXAMPLES / example), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("example", "args", "address", "key"),
    [
        (
            "rabbitmq-nats.yaml",
            ["--route", "orders-to-nats", "eu.created"],
            "legacy.orders.eu.created",
            None,
        ),
        ("rabbitmq-nats.yaml", ["--route", "shipments-to-rabbit", "shipments.eu"], "eu", None),
        (
            "kafka-nats.yaml",
            ["--route", "clicks-to-nats", "--partition", "3", "clicks"],
            "kafka.clicks.3",
            None,
        ),
        (
            "kafka-nats.yaml",
            ["--route", "telemetry-to-kafka", "telemetry.dev42.cpu"],
            "telemetry",
            "dev42",
        ),
        (
            "stomp-nats.yaml",
            ["--route", "quotes-to-nats", "/topic/quotes.NYSE.IBM"],
            "quotes.NYSE.IBM",
            None,
        ),
    ],
)
def test_map_examples(example: str, args: list[str], address: str, key: str | None) -> None:
    result = natsbridge_map(example, *args)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["address"] == address
    assert output.get("key") == key
    assert output["headers"]["Bridge-Hops"] == ["1"]


def test_map_carries_headers_and_dedup_id() -> None:
    result = natsbridge_map(
        "kafka-nats.yaml",
        "--route",
        "clicks-to-nats",
        "--partition",
        "2",
        "--header",
        "X-A=1",
        "--header",
        "X-A=2",
        "clicks",
    )
    output = json.loads(result.stdout)
    assert output["headers"]["X-A"] == ["1", "2"]
    assert output["headers"]["Nats-Msg-Id"] == ["kafka:clicks:2:0"]


def test_map_subject_outside_the_route_fails() -> None:
    result = natsbridge_map("rabbitmq-nats.yaml", "--route", "shipments-to-rabbit", "other.eu")
    assert result.returncode == 1
    assert "'other.eu' does not match route 'shipments-to-rabbit'" in result.stderr
    assert result.stdout == ""


def test_map_unknown_route_suggests() -> None:
    result = natsbridge_map("rabbitmq-nats.yaml", "--route", "orders-to-nat", "x")
    assert result.returncode == 1 and "did you mean 'orders-to-nats'?" in result.stderr


def test_map_bad_header_is_a_usage_error() -> None:
    result = natsbridge_map(
        "rabbitmq-nats.yaml", "--route", "orders-to-nats", "--header", "novalue", "x"
    )
    assert result.returncode == 2 and "NAME=VALUE" in result.stderr


def test_map_routing_key_that_needs_escaping() -> None:
    result = natsbridge_map("rabbitmq-nats.yaml", "--route", "orders-to-nats", "eu west.créé")
    assert result.returncode == 0, result.stderr
    subject = json.loads(result.stdout)["address"]
    assert subject.startswith("legacy.orders.") and " " not in subject


KAFKA_TO_KAFKA = """\
version: 1
bridge: {id: t}
connections:
  kafka: {kind: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
  nats: {kind: nats, servers: ["nats://127.0.0.1:4222"]}
routes:
  - name: keyed
    from: {connection: kafka, topics: [clicks]}
    to: {connection: nats, subject: "kafka.{{key}}"}
"""


def natsbridge_raw(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args], capture_output=True, text=True, timeout=60
    )


def test_map_takes_a_key_of_any_bytes(tmp_path: Path) -> None:
    config = tmp_path / "keyed.yaml"
    config.write_text(KAFKA_TO_KAFKA)
    result = natsbridge_raw(
        "map", "-c", str(config), "--route", "keyed", "--key", b"\xff", "clicks"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["address"] == "kafka.%FF"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["orders-to-nats", b"eu.\xff"], "address b'eu.\\xff'"),
        (["orders-to-nats", "--header", b"X-\xfe=1", "eu"], "header name b'X-\\xfe'"),
        (["orders-to-nats", "--header", b"X=\xfe", "eu"], "header value b'\\xfe'"),
    ],
)
def test_map_refuses_other_text_that_is_not_utf8(args: list[str | bytes], what: str) -> None:
    example = str(EXAMPLES / "rabbitmq-nats.yaml")
    result = natsbridge_raw("map", "-c", example, "--route", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"natsbridge: the {what} is not UTF-8; only --key takes any bytes\n"


@pytest.mark.parametrize("watch", ["nan", "inf", "-1", "0", "soon"])
def test_status_watch_takes_positive_finite_seconds(watch: str) -> None:
    result = natsbridge_raw("status", "--watch", watch)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected seconds between 0 and 86400" in result.stderr


@pytest.mark.parametrize("partition", ["-1", "2147483648", "x", "٣"])
def test_map_partition_is_a_kafka_partition(partition: str) -> None:
    result = natsbridge_map(
        "kafka-nats.yaml", "--route", "clicks-to-nats", "--partition", partition, "clicks"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected a partition from 0 to 2147483647" in result.stderr


@pytest.mark.parametrize("url", ["foo", "http://[::1", "http://h:99999", "ftp://h/"])
def test_status_admin_must_be_an_http_url(url: str) -> None:
    result = natsbridge_raw("status", "--admin", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected HOST:PORT or http(s)://HOST:PORT" in result.stderr
