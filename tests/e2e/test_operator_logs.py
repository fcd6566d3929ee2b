"""What an operator reads from `natsbridge run`: JSON lines only, one line per connect
failure, the route on connector lines (also from driver threads), totals after --once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.e2e.bridge_process import BridgeProcess, free_port, write_config
from tests.e2e.rabbitmq_admin import delete_queues
from tests.e2e.test_rabbitmq_bridge import wait_for

pytestmark = [pytest.mark.amqp, pytest.mark.nats]
NATSBRIDGE = (sys.executable, "-m", "natsbridge")
REFUSALS = ("refused", "could not connect", "Connect call failed", "cannot connect")


def events(bridge: BridgeProcess) -> list[dict[str, Any]]:
    """Every line of the bridge's log as JSON (the start markers of BridgeProcess aside)."""
    lines = [
        line
        for line in bridge.log.read_text().splitlines()
        if line and not line.startswith("---- start")
    ]
    return [json.loads(line) for line in lines]  # fails on any line that is not JSON


def test_one_json_line_per_connect_failure_and_the_route_on_connector_lines(
    amqp_url: str, nats_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    down = free_port()
    sink = {"connection": "nats", "subject": f"ops{tag}.out"}
    config = {
        "version": 1,
        "bridge": {"id": f"ops-{tag}"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": amqp_url},
            "rabbit_down": {"kind": "amqp", "url": f"amqp://guest:guest@127.0.0.1:{down}/%2F"},
            "stomp_down": {
                "kind": "stomp",
                "url": f"stomp://127.0.0.1:{down}",
                "dialect": "rabbitmq",
            },
            "nats_down": {"kind": "nats", "servers": [f"nats://127.0.0.1:{down}"]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"up-{tag}",
                "from": {"connection": "rabbit", "exchange": f"ops-{tag}", "binding_keys": ["#"]},
                "to": sink,
            },
            {
                "name": f"amqp-{tag}",
                "from": {"connection": "rabbit_down", "queue": tag},
                "to": sink,
            },
            {
                "name": f"stomp-{tag}",
                "from": {"connection": "stomp_down", "destination": f"/queue/{tag}"},
                "to": sink,
            },
            {
                "name": f"nats-{tag}",
                "from": {"connection": "nats_down", "subject": f"ops{tag}.in"},
                "to": sink,
            },
        ],
    }
    bridge = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
    bridge.start(wait_ready=False)
    up = f"up-{tag}"
    try:
        wait_for(lambda: bridge.get("/api/routes")[0] == 200, what="the admin endpoint")
        wait_for(lambda: bridge.routes()[up]["source"]["connected"], what="the good route")
        # The broker cancels the good route's consumer: its connector notices on pika's thread.
        assert delete_queues(lambda name: tag in name) >= 1
        wait_for(lambda: bridge.routes()[up]["counters"]["reconnects"] >= 1, what="reconnect")
        wait_for(lambda: bridge.routes()[up]["source"]["connected"], what="connected again")
        failed = {route: 0 for route in (f"amqp-{tag}", f"stomp-{tag}", f"nats-{tag}")}

        def failed_thrice() -> bool:
            for route in failed:
                failed[route] = sum(
                    1
                    for event in events(bridge)
                    if event.get("event") == "connect_failed" and event.get("route") == route
                )
            return min(failed.values()) >= 3

        wait_for(failed_thrice, what="three connect failures of each route that is down")
    finally:
        assert bridge.terminate() == 0
    seen = events(bridge)
    kinds = [e.get("event") for e in seen]
    # 4 core-NATS sinks and 1 core-NATS source under at_least_once, the banner, 4 routes
    assert kinds[:10] == ["config_warning"] * 5 + ["starting"] + ["route"] * 4
    assert seen[-1]["msg"] == "natsbridge: stopped cleanly"
    about_refusals = [e for e in seen if any(word in e["msg"] for word in REFUSALS)]
    assert about_refusals and all(e.get("event") == "connect_failed" for e in about_refusals), [
        (e["logger"], e["msg"]) for e in about_refusals if e.get("event") != "connect_failed"
    ]
    connector_lines = [e for e in seen if e["logger"].startswith(("natsbridge.amqp", "pika"))]
    assert any("cancelled the consumer" in e["msg"] for e in connector_lines), connector_lines
    assert all(e.get("route") == up for e in connector_lines), connector_lines


async def _publish(nats_url: str, stream: str, subject: str, count: int) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        for i in range(count):
            await js.publish(subject, str(i).encode())
    finally:
        await nc.close()


async def _delete_streams(nats_url: str, *streams: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        for stream in streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def test_run_once_prints_totals(nats_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    source, target = f"OPS_IN_{tag}", f"OPS_OUT_{tag}"
    asyncio.run(_publish(nats_url, source, f"opsin{tag}.x", 5))
    config = {
        "version": 1,
        "bridge": {
            "id": f"ops-{tag}",
            "data_dir": str(tmp_path / "data"),
            "admin": {"enabled": False},
        },
        "connections": {"nats": {"kind": "nats", "servers": [nats_url]}},
        "routes": [
            {
                "name": f"once-{tag}",
                "from": {
                    "connection": "nats",
                    "subject": f"opsin{tag}.x",
                    "jetstream": {"stream": source, "durable": f"once-{tag}"},
                },
                "to": {
                    "connection": "nats",
                    "subject": f"opsout{tag}.x",
                    "jetstream": {"stream": target},
                },
            }
        ],
    }
    path = write_config(tmp_path / "bridge.yaml", config)
    try:
        run = subprocess.run(
            [*NATSBRIDGE, "run", "--once", "--log-format", "text", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        asyncio.run(_delete_streams(nats_url, source, target))
    assert run.returncode == 0, run.stderr
    assert (
        f"  once-{tag}: 5 received, 5 delivered, 0 dead-lettered, 0 left in the buffer\n"
        "totals: 1 route, 5 received, 5 delivered, 0 dead-lettered, 0 left in the buffer\n"
        "natsbridge: stopped cleanly\n"
    ) in run.stdout
