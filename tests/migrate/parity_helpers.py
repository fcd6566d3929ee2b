"""What the parity tests share: a config of one migration in mirror, and waiting for it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Config
from natsbridge.bridge.migrate.model import Migration
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

WAIT_S = 90.0


def mirror_config(
    tmp_path: Path,
    name: str,
    legacy: dict[str, Any],
    connections: dict[str, Any],
    nats: dict[str, Any],
) -> Path:
    """A config of one migration, `name`, in mirror (its route `<name>.to-nats`)."""
    return write_config(
        tmp_path / "bridge.yaml",
        {
            "version": 1,
            "bridge": {"id": "parity", "data_dir": str(tmp_path / "data")},
            "connections": connections,
            "migrations": [
                {
                    "name": name,
                    "legacy": legacy,
                    "nats": {"connection": "nats", **nats},
                    "verify": {"window": "10m", "headers": ["trace"]},
                }
            ],
        },
    )


def migration_of(path: Path) -> tuple[Config, Migration]:
    """The config at `path` and its one migration."""
    config = load_config(path)
    return config, config.migrations[0]


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


async def delete_and_inject(nats_url: str, stream: str, seq: int, subject: str) -> int:
    """Delete message `seq` from `stream`, publish one of nobody's; the new one's seq."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        assert await js.delete_msg(stream, seq)
        return int((await js.publish(subject, b"from no legacy broker", stream=stream)).seq)
    finally:
        await nc.close()
