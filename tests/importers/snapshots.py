"""Snapshot files of generated configs: compare, or rewrite with NATSBRIDGE_UPDATE_SNAPSHOTS=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def assert_snapshot(name: str, text: str) -> None:
    """`text` equals snapshots/NAME; with NATSBRIDGE_UPDATE_SNAPSHOTS=1 it becomes it."""
    path = SNAPSHOTS / name
    if os.environ.get("NATSBRIDGE_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} changed: review, then NATSBRIDGE_UPDATE_SNAPSHOTS=1"


def natsbridge(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the natsbridge CLI in a child process (no broker variables leak into the config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATSBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
