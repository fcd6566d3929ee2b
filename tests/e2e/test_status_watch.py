"""`natsbridge status --watch` on a real terminal (tmux): it outlives a bridge restart and
Ctrl-C ends it with exit 0 and no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.e2e.bridge_process import BridgeProcess, write_config

pytestmark = [pytest.mark.nats]
WAIT_S = 60.0  # bound on waiting for the screen; nothing asserts how fast it changes


class Tmux:
    """One detached tmux session running a command on a 160x40 terminal."""

    def __init__(self, command: str) -> None:
        self.name = f"natsbridge-{uuid.uuid4().hex[:8]}"
        self.tmux(
            "new-session", "-d", "-s", self.name, "-x", "160", "-y", "40", f"{command}; sleep 600"
        )

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=30)


def test_watch_survives_a_bridge_restart_and_exits_0_on_ctrl_c(
    nats_url: str, tmp_path: Path
) -> None:
    if shutil.which("tmux") is None:
        if in_ci():
            pytest.fail("tmux is not installed (apt-get install tmux)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    tag = uuid.uuid4().hex[:8]
    route = f"watched-{tag}"
    config = {
        "version": 1,
        "bridge": {"id": f"watch-{tag}"},
        "connections": {"nats": {"kind": "nats", "servers": [nats_url]}},
        "routes": [
            {
                "name": route,
                "from": {"connection": "nats", "subject": f"watch{tag}.in"},
                "to": {"connection": "nats", "subject": f"watch{tag}.out"},
                "delivery": "at_most_once",
            }
        ],
    }
    bridge = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
    bridge.start()
    watch = Tmux(
        f"{sys.executable} -m natsbridge status --admin http://127.0.0.1:{bridge.port} --watch 0.5"
        "; echo natsbridge-exit=$?"
    )
    try:
        first = watch.wait_for(f"{route}  running")
        assert "1 route, 1 ready" in first and "not ready" in first  # the legend
        assert bridge.terminate() == 0
        down = watch.wait_for("cannot reach the admin endpoint")
        assert "trying again in 0.5s" in down
        bridge.start()
        watch.wait_for(f"{route}  running")
        watch.tmux("send-keys", "-t", watch.name, "C-c")
        last = watch.wait_for("natsbridge-exit=")
        assert "natsbridge-exit=0" in last and "Traceback" not in last
    finally:
        watch.close()
        bridge.stop()
    print(first)  # the screen shown in the README (pytest -s)
