"""A config with migrations, written to a temporary file with its own data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

MIGRATIONS = """\
version: 1
bridge:
  id: mig
  data_dir: {data_dir}
  admin: {{listen: "127.0.0.1:{port}"}}
connections:
  rabbit: {{kind: amqp, url: "amqp://guest:guest@localhost:5672/%2F"}}
  kafka: {{kind: kafka, bootstrap_servers: ["localhost:9092"]}}
  nats: {{kind: nats, servers: ["nats://localhost:4222"]}}
migrations:
  - name: orders
    phase: mirror
    legacy:
      connection: rabbit
      exchange: orders
      binding_keys: ["#"]
    nats:
      connection: nats
      subject: "legacy.orders.{{{{routing_key}}}}"
      stream: ORDERS
    back: {{routing_key: "{{{{subject}}}}"}}
    verify: {{window: 5m, max_lag: 10}}
  - name: clicks
    legacy: {{connection: kafka, topics: [clicks]}}
    nats: {{connection: nats, subject: legacy.clicks, stream: CLICKS}}
"""


def write(tmp_path: Path, text: str | None = None, port: int = 1) -> Path:
    """`text` (default MIGRATIONS) as bridge.yaml, its data dir under `tmp_path`."""
    path = tmp_path / "bridge.yaml"
    body = text if text is not None else MIGRATIONS
    path.write_text(body.format(data_dir=tmp_path / "data", port=port))
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The two-migration config (port 1: no bridge answers on it)."""
    return write(tmp_path)
