"""The admin endpoint, metrics, logs and `natsbridge status` on a running bridge."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.test_rabbitmq_bridge import Rabbit, unique_config, wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]
PASSWORD = "s3cret-Zq7-never-shown"


@pytest.fixture
def running(tmp_path: Path) -> Any:
    started: list[BridgeProcess] = []

    def start(
        config: dict[str, Any], env: dict[str, str] | None = None, ready: bool = True
    ) -> BridgeProcess:
        bridge = BridgeProcess(
            write_config(tmp_path / "bridge.yaml", config), tmp_path / "data", env
        )
        started.append(bridge)
        bridge.start(wait_ready=ready)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_probes_metrics_and_routes(amqp_url: str, running: Any, services: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    config, names = unique_config(tag)
    bridge = running(config)
    assert bridge.get("/healthz")[0] == 200
    assert bridge.get("/readyz") == (200, {"ready": True, "failing": []})
    routes = bridge.routes()
    assert set(routes) == {
        names["orders-to-nats"],
        names["shipments-to-rabbit"],
        names["pricing-rpc"],
    }
    orders = names["orders-to-nats"]

    rabbit = Rabbit(amqp_url)
    for i in range(37):
        rabbit.publish(names["orders"], "eu.x", b"m" * i)
    rabbit.close()
    wait_for(lambda: bridge.routes()[orders]["counters"]["delivered"] == 37, what="37")
    status, text = bridge.get("/metrics")
    assert status == 200
    values = metric_values(text)
    labels_in = (("connection", "rabbit"), ("direction", "in"), ("route", orders))
    labels_out = (("connection", "nats"), ("direction", "out"), ("route", orders))
    assert values[("natsbridge_messages_total", labels_in)] == 37
    assert values[("natsbridge_messages_total", labels_out)] == 37
    assert values[("natsbridge_bytes_total", labels_in)] == sum(range(37))
    assert values[("natsbridge_acks_total", (("route", orders),))] == 37
    assert values[("natsbridge_latency_seconds_count", (("route", orders),))] == 37
    assert values[("natsbridge_route_up", (("route", orders),))] == 1
    assert ("natsbridge_buffer_bytes", (("route", orders),)) in values

    # natsbridge status --json shows what /api/routes shows
    result = subprocess.run(
        [sys.executable, "-m", "natsbridge", "status", "--admin", bridge.admin, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    shown = {route["name"]: route for route in json.loads(result.stdout)["routes"]}
    assert shown[orders]["counters"] == bridge.routes()[orders]["counters"]
    table = subprocess.run(
        [sys.executable, "-m", "natsbridge", "status", "--admin", bridge.admin],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert table.stdout.splitlines()[0].split()[:2] == ["ROUTE", "STATE"]
    assert any(line.startswith(orders) and " 37 " in line for line in table.stdout.splitlines())

    # readiness follows RabbitMQ going away and coming back
    services.stop("rabbitmq")
    began = time.monotonic()
    wait_for(lambda: bridge.get("/readyz")[0] == 503, timeout=10, what="503 within 10 s")
    failing = {item["route"] for item in bridge.get("/readyz")[1]["failing"]}
    assert orders in failing
    assert time.monotonic() - began <= 10
    services.start("rabbitmq")
    wait_for(lambda: bridge.get("/readyz")[0] == 200, timeout=90, what="ready again")
    assert bridge.terminate() == 0


def test_token_guards_everything_but_healthz(running: Any) -> None:
    config, _ = unique_config(uuid.uuid4().hex[:8])
    config["bridge"]["admin"] = {"token": "${env:NATSBRIDGE_TEST_ADMIN_TOKEN}"}
    bridge = running(config, {"NATSBRIDGE_TEST_ADMIN_TOKEN": PASSWORD}, ready=False)
    wait_for(lambda: bridge.get("/healthz")[0] == 200, what="healthz")
    for path in ("/readyz", "/metrics", "/api/routes"):
        assert bridge.get(path)[0] == 401
    request = urllib.request.Request(
        bridge.admin + "/api/routes", headers={"Authorization": f"Bearer {PASSWORD}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    result = subprocess.run(
        [sys.executable, "-m", "natsbridge", "status", "--admin", bridge.admin],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "401" in result.stderr and "--token" in result.stderr
    assert bridge.terminate() == 0


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_refused_password_is_never_printed(amqp_url: str, tmp_path: Path, level: str) -> None:
    """At every log level, and over /metrics, /api/routes and /readyz."""
    config, names = unique_config(uuid.uuid4().hex[:8])
    orders = names["orders-to-nats"]
    config["connections"]["rabbit"]["url"] = "${env:NATSBRIDGE_TEST_AMQP_URL}"
    config["routes"] = [config["routes"][0]]
    bad_url = amqp_url.replace("guest:guest@", f"guest:{PASSWORD}@")
    assert PASSWORD in bad_url
    path = write_config(tmp_path / "bridge.yaml", config)
    env = {"NATSBRIDGE_TEST_AMQP_URL": bad_url}
    bridge = BridgeProcess(path, tmp_path / "data", env, ("--log-level", level))
    bridge.start(wait_ready=False)
    try:
        wait_for(lambda: bridge.get("/readyz")[0] == 503, what="the admin endpoint")
        wait_for(lambda: bridge.routes()[orders]["last_error"] is not None, what="refusal")
        seen = [bridge.get(path)[1] for path in ("/metrics", "/api/routes", "/readyz")]
        seen.append(json.dumps(bridge.routes()))
    finally:
        bridge.terminate()
    log = bridge.log.read_text()
    if level in ("debug", "info", "warning"):
        assert orders in log and "connect" in log, log[-2000:]
    for text in [log, *map(str, seen)]:
        assert PASSWORD not in text
