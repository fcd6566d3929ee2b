"""What the parity tests share: a migration as bridge.migrate.parity reads it, a mirror run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.config.model import Endpoint
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

WAIT_S = 90.0


@dataclass(frozen=True)
class Verify:
    window: float = 600.0
    headers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Nats:
    connection: str
    stream: str


@dataclass(frozen=True)
class Spec:
    nats: Nats
    verify: Verify


@dataclass(frozen=True)
class Migration:
    name: str
    spec: Spec
    legacy: Endpoint
    legacy_kind: str


def mirror_config(
    tmp_path: Path,
    name: str,
    legacy: dict[str, Any],
    connections: dict[str, Any],
    to: dict[str, Any],
) -> Path:
    """A config whose one route is the migration's mirror, `<name>.to-nats`."""
    return write_config(
        tmp_path / "bridge.yaml",
        {
            "version": 1,
            "bridge": {"id": "parity", "data_dir": str(tmp_path / "data")},
            "connections": connections,
            "routes": [{"name": f"{name}.to-nats", "from": legacy, "to": to}],
        },
    )


def migration_of(
    path: Path, name: str, stream: str, headers: list[str]
) -> tuple[Config, Migration]:
    """The config at `path` and the migration whose mirror is its route `<name>.to-nats`."""
    config = load_config(path)
    route = next(r for r in config.routes if r.name == f"{name}.to-nats")
    migration = Migration(
        name=name,
        spec=Spec(Nats("nats", stream), Verify(headers=headers)),
        legacy=route.source,
        legacy_kind=route.source_kind,
    )
    return config, migration


def wait_for_stream(bridge: BridgeProcess, nats_url: str, stream: str, count: int) -> None:
    """Wait until `stream` holds `count` messages (the bridge's log if it never does)."""
    deadline = time.monotonic() + WAIT_S
    while asyncio.run(stream_count(nats_url, stream)) < count:
        assert time.monotonic() < deadline, bridge.tail()
        time.sleep(0.2)


def mirror(path: Path, nats_url: str, stream: str, count: int) -> None:
    """Run the bridge on `path` until `stream` holds `count` messages."""
    bridge = BridgeProcess(path, path.parent / "data")
    bridge.start()
    try:
        wait_for_stream(bridge, nats_url, stream, count)
        assert bridge.terminate() == 0, bridge.tail()
    finally:
        bridge.stop()
