"""`natsbridge import rabbitmq` on a definitions export of the dev RabbitMQ.

The test builds a vhost of its own through the management API (exchanges of every type, an
internal one, an exchange-to-exchange binding, queues with DLX, TTL, length limits, overflow,
priorities, a policy, a queue fed through the default exchange), exports its definitions both
ways the management API offers, and holds the generated config to a snapshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.e2e.bridge_process import BridgeProcess
from tests.e2e.jetstream import stream_count
from tests.importers.snapshots import assert_snapshot, natsbridge

pytestmark = pytest.mark.amqp

MANAGEMENT_URL = os.environ.get("NATSBRIDGE_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
_AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}

EXCHANGES = {
    "orders": {"type": "topic"},
    "orders.dlx": {"type": "topic"},
    "payments": {"type": "direct"},
    "notifications": {"type": "fanout"},
    "documents": {"type": "headers"},
    "audit": {"type": "topic", "internal": True},
    "unused": {"type": "direct"},
}
QUEUES = {
    "orders.eu": {
        "x-max-length": 10000,
        "x-message-ttl": 60000,
        "x-dead-letter-exchange": "orders.dlx",
        "x-dead-letter-routing-key": "expired",
    },
    "orders.us": {"x-max-length": 5000, "x-message-ttl": 120000, "x-overflow": "reject-publish"},
    "orders.dead": {},
    "payments.settle": {"x-max-priority": 10},
    "notify.email": {"x-expires": 3600000},
    "notify.sms": {},
    "documents.invoices": {},
    "audit.log": {"x-message-ttl": 86400000},
    "tasks": {"x-queue-type": "quorum", "x-single-active-consumer": True},
}
BINDINGS = [  # source, destination, destination type, routing key, arguments
    ("orders", "orders.eu", "queue", "eu.*", {}),
    ("orders", "orders.us", "queue", "us.#", {}),
    ("orders", "audit", "exchange", "audit.#", {}),
    ("orders.dlx", "orders.dead", "queue", "#", {}),
    ("payments", "payments.settle", "queue", "settle", {}),
    ("payments", "payments.settle", "queue", "refund", {}),
    ("notifications", "notify.email", "queue", "", {}),
    ("notifications", "notify.sms", "queue", "", {}),
    ("documents", "documents.invoices", "queue", "", {"x-match": "all", "type": "invoice"}),
    ("audit", "audit.log", "queue", "#", {}),
]
POLICY = {"pattern": r"^payments\.", "apply-to": "queues", "definition": {"max-length": 2000}}


def _api(method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={**_AUTH, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
    return json.loads(data) if data else None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@pytest.fixture
def vhost(amqp_url: str) -> Iterator[str]:
    """A vhost of this test's own, filled with the objects above; deleted afterwards."""
    unique_name = f"imp{uuid.uuid4().hex[:8]}"  # short: the snapshot's comments wrap alike
    v = _q(unique_name)
    _api("PUT", f"vhosts/{v}", {})
    try:
        _api("PUT", f"permissions/{v}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        for name, exchange in EXCHANGES.items():
            _api("PUT", f"exchanges/{v}/{_q(name)}", {"durable": True, **exchange})
        for name, arguments in QUEUES.items():
            _api("PUT", f"queues/{v}/{_q(name)}", {"durable": True, "arguments": arguments})
        for source, destination, kind, key, arguments in BINDINGS:
            letter = "q" if kind == "queue" else "e"
            _api(
                "POST",
                f"bindings/{v}/e/{_q(source)}/{letter}/{_q(destination)}",
                {"routing_key": key, "arguments": arguments},
            )
        _api("PUT", f"policies/{v}/payments-limit", POLICY)
        yield unique_name
    finally:
        _api("DELETE", f"vhosts/{v}")


def _import(definitions: Path, vhost: str, *extra: str) -> str:
    result = natsbridge(
        "import", "rabbitmq", "--definitions", str(definitions), "--vhost", vhost, *extra
    )
    assert result.returncode == 0, result.stderr
    what = "routes" if "--routes" in extra else "migrations"
    assert f"natsbridge import: 7 {what} to " in result.stderr
    return result.stdout


def test_import_of_a_vhost_export_matches_the_snapshot_and_validates(
    vhost: str, tmp_path: Path
) -> None:
    one = tmp_path / "definitions.json"
    one.write_text(json.dumps(_api("GET", f"definitions/{_q(vhost)}")))
    every = tmp_path / "all.json"
    every.write_text(json.dumps(_api("GET", "definitions")))

    generated = _import(one, vhost)
    assert_snapshot("rabbitmq.yaml", generated.replace(vhost, "VHOST"))
    # The broker-wide export (items carry their vhost) gives the same migrations.
    from_all = _import(every, vhost)
    assert from_all.partition("\nmigrations:")[2] == generated.partition("\nmigrations:")[2]

    routes = tmp_path / "routes.yaml"
    _import(one, vhost, "--routes", "-o", str(routes))
    valid = natsbridge("validate", "-c", str(routes))
    assert valid.returncode == 0, valid.stderr
    assert "valid, bridge 'import-rabbitmq', 7 routes" in valid.stdout
    assert "orders.to-nats: rabbitmq:exchange orders audit.#,eu.*,us.#" in valid.stdout


def test_the_migrations_form_validates(vhost: str, tmp_path: Path) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps(_api("GET", f"definitions/{_q(vhost)}")))
    config = tmp_path / "migrations.yaml"
    _import(definitions, vhost, "-o", str(config))
    valid = natsbridge("validate", "-c", str(config))
    assert valid.returncode == 0, valid.stderr


PUBLISHED = [  # exchange, routing key, headers, copies
    ("orders", "eu.1", {}, 5),
    ("orders", "us.west.2", {}, 4),
    ("orders", "audit.3", {}, 3),
    ("orders", "asia.4", {}, 2),  # bound to nothing: neither legacy queues nor the tap take it
    ("notifications", "", {}, 6),
    ("documents", "", {"type": "invoice"}, 2),
    ("documents", "", {"type": "memo"}, 1),  # no legacy queue; the tap copies it (see NOTE)
]
STREAMS = {"ORDERS": 12, "AUDIT": 3, "NOTIFICATIONS": 6, "DOCUMENTS": 3, "PAYMENTS": 0}
QUEUES_AFTER = {"orders.eu": 5, "orders.us": 4, "audit.log": 3, "notify.email": 6}
QUEUES_AFTER |= {"notify.sms": 6, "documents.invoices": 2}
COPY_DEADLINE_S = 60.0


@pytest.mark.nats
def test_the_imported_mirror_copies_each_flow_and_leaves_legacy_queues_alone(
    vhost: str, amqp_url: str, nats_url: str, tmp_path: Path
) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps(_api("GET", f"definitions/{_q(vhost)}")))
    tag = vhost
    routes = _import(definitions, vhost, "--routes", "--prefix", f"imp.{tag}")
    # Stream names are per import; the shared NATS keeps every earlier run's streams.
    routes = re.sub(r"stream: ([A-Z0-9_-]+)}", rf"stream: \1_{tag}}}", routes)
    config = tmp_path / "routes.yaml"
    config.write_text(routes)
    url = amqp_url.rsplit("/", 1)[0] + "/" + _q(vhost)
    bridge = BridgeProcess(
        config, tmp_path / "data", env={"NATSBRIDGE_AMQP_URL": url, "NATSBRIDGE_NATS_URL": nats_url}
    )
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        bridge.start()  # ready: every tap queue is bound
        channel = connection.channel()
        channel.confirm_delivery()
        for exchange, key, headers, copies in PUBLISHED:
            for _ in range(copies):
                properties = pika.BasicProperties(headers=headers or None, delivery_mode=2)
                channel.basic_publish(exchange, key, b"payload", properties)
        counts = _stream_counts_once_copied(nats_url, tag)
        assert counts == STREAMS, bridge.tail()
        depths = {
            q: channel.queue_declare(q, passive=True).method.message_count for q in QUEUES_AFTER
        }
        assert depths == QUEUES_AFTER  # the legacy consumers' messages are all still there
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
        connection.close()


def _stream_counts_once_copied(nats_url: str, tag: str) -> dict[str, int]:
    """Each stream's count, once they reach STREAMS or COPY_DEADLINE_S has passed."""
    deadline = time.monotonic() + COPY_DEADLINE_S
    while True:
        counts = {name: asyncio.run(stream_count(nats_url, f"{name}_{tag}")) for name in STREAMS}
        if counts == STREAMS or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)
