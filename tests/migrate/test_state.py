"""The durable phase state: atomic replacement, history lines, damage refused, a kill -9."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from natsbridge.bridge.migrate import state
from natsbridge.bridge.migrate.model import Phase


def test_no_state_before_the_first_change(tmp_path: Path) -> None:
    assert state.read_phases(tmp_path) == {}
    assert state.history(tmp_path) == []


def test_changes_are_recorded_in_state_and_history(tmp_path: Path) -> None:
    with state.locked(tmp_path):
        state.record(tmp_path, "a", Phase.MIRROR, Phase.VERIFY, who="cli", reason="go")
        state.record(tmp_path, "b", Phase.MIRROR, Phase.VERIFY, who="api")
        state.record(tmp_path, "a", Phase.VERIFY, Phase.CUTOVER, who="cli", forced=True)
    assert state.read_phases(tmp_path) == {"a": Phase.CUTOVER, "b": Phase.VERIFY}
    changes = state.history(tmp_path, "a")
    assert [(c["from"], c["to"], c["who"], c["forced"]) for c in changes] == [
        ("mirror", "verify", "cli", False),
        ("verify", "cutover", "cli", True),
    ]
    assert changes[0]["reason"] == "go" and changes[0]["time"] > 0
    assert len(state.history(tmp_path)) == 3


def test_a_torn_history_line_is_skipped(tmp_path: Path) -> None:
    with state.locked(tmp_path):
        state.record(tmp_path, "a", Phase.MIRROR, Phase.VERIFY, who="cli")
    with (state.state_dir(tmp_path) / state.HISTORY_FILE).open("a") as out:
        out.write('{"time": 1, "migra')
    assert len(state.history(tmp_path)) == 1


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"version": 2, "migrations": {}}', '{"version": 1, "migrations": {"a": 1}}'],
)
def test_a_damaged_state_is_refused_not_overwritten(tmp_path: Path, text: str) -> None:
    path = state.state_dir(tmp_path) / state.STATE_FILE
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(state.StateError, match="damaged migration state"):
        state.read_phases(tmp_path)
    with state.locked(tmp_path), pytest.raises(state.StateError):
        state.record(tmp_path, "a", Phase.MIRROR, Phase.VERIFY, who="cli")
    assert path.read_text() == text


def _record_forever(data_dir: str) -> None:
    phases = [Phase.MIRROR, Phase.VERIFY]
    turn = 0
    while True:
        state.record(data_dir, "a", phases[turn % 2], phases[(turn + 1) % 2], who="cli")
        turn += 1


def test_kill_9_while_recording_leaves_a_whole_state(tmp_path: Path) -> None:
    """The state file is the old or the new one, never a torn one."""
    with state.locked(tmp_path):
        state.record(tmp_path, "a", Phase.MIRROR, Phase.VERIFY, who="cli")
    for _ in range(5):
        child = multiprocessing.get_context("fork").Process(
            target=_record_forever, args=(str(tmp_path),)
        )
        child.start()
        while len(state.history(tmp_path)) < 20:
            pass
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert state.read_phases(tmp_path)["a"] in (Phase.MIRROR, Phase.VERIFY)
        leftovers = [p for p in state.state_dir(tmp_path).iterdir() if p.name.startswith(".")]
        for leftover in leftovers:  # a temporary file the kill interrupted: never read
            leftover.unlink()
        (state.state_dir(tmp_path) / state.HISTORY_FILE).write_text("")
    data = json.loads((state.state_dir(tmp_path) / state.STATE_FILE).read_text())
    assert data["version"] == state.STATE_VERSION


def test_parity_is_remembered_for_the_metrics(tmp_path: Path) -> None:
    assert state.last_parity(tmp_path) == {}
    state.remember_parity(tmp_path, "a", True)
    state.remember_parity(tmp_path, "b", False)
    last = state.last_parity(tmp_path)
    assert last["a"]["ok"] is True and last["b"]["ok"] is False
