"""`natsbridge buffer` (alias `streams`) and `natsbridge dlq`, through add_parsers's parser."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from natsbridge.bridge.broker.commands import add_parsers, age, size
from natsbridge.bridge.broker.config import ConsumerConfig, Retention, StreamConfig
from natsbridge.bridge.broker.store import DB_NAME, Store


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="natsbridge")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A store with a route stream (3 messages, 1 pending, 1 dead letter) and a log stream."""
    store = Store.open(tmp_path)
    store.add_stream(
        StreamConfig(name="orders", retention=Retention.WORKQUEUE, dead_letter="orders.dlq")
    )
    store.add_consumer("orders", ConsumerConfig(name="deliver"))
    store.add_stream(StreamConfig(name="log", subjects=("log.>",)))
    for i in range(4):
        store.publish("orders", f"orders.{i}", f"payload {i}".encode(), {"X": [str(i)]})
    store.commit()
    rows = store.fetch("orders", "deliver", 2).messages
    store.term("orders", "deliver", rows[0][0], "NOT_FOUND - no exchange 'x'")
    store.dead_letter("orders", "raw.key", b"\x00\xffbinary", None, "template: no such token")
    store.close()
    return tmp_path


def test_buffer_text(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("buffer", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "STREAM", "RETENTION", "MESSAGES", "BYTES", "FIRST", "LAST", "OLDEST"
    ]  # fmt: skip
    assert "orders      workqueue  3" in out
    assert "dead letters -> orders.dlq" in out
    assert (
        "consumer deliver: pending 2, ack pending 1, ack floor 1, redelivered 0, dead-lettered 1"
        in out
    )


def test_buffer_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("buffer", "--data-dir", str(data_dir), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {s["config"]["name"]: s for s in data["streams"]}
    assert set(by_name) == {"orders", "orders.dlq", "log"}
    orders = by_name["orders"]
    assert (orders["messages"], orders["first_seq"], orders["last_seq"]) == (3, 2, 4)
    [consumer] = orders["consumers"]
    assert consumer["num_pending"] == 2 and consumer["num_dead_lettered"] == 1
    assert by_name["log"]["config"]["subjects"] == ["log.>"]


def test_streams_check(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("streams", "--data-dir", str(data_dir), "--check") == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    path = data_dir / DB_NAME
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - 8192)
        f.write(b"\x13" * 8192)
    code = cli("streams", "--data-dir", str(data_dir), "--check", "--json")
    captured = capsys.readouterr()
    assert code == 1, captured
    if captured.out:
        report = json.loads(captured.out)
        assert not report["ok"] and report["problems"]
    else:
        assert "damaged" in captured.err


def test_streams_is_a_deprecated_alias_of_buffer(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("buffer", "--data-dir", str(data_dir)) == 0
    shown = capsys.readouterr()
    assert cli("streams", "--data-dir", str(data_dir)) == 0
    alias = capsys.readouterr()
    assert alias.out == shown.out and shown.err == ""
    assert "`streams` is deprecated, use `natsbridge buffer`" in alias.err


def test_buffer_and_dlq_resolve_only_the_data_dir_of_the_config(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The brokers' passwords of a config need not be in the environment of an operator."""
    import socket

    from natsbridge.bridge.cli import main

    with socket.socket() as probe:  # a port nothing listens on: no bridge answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "version: 1\n"
        "bridge: {id: b, data_dir: '${env:BUFFER_TEST_DATA_DIR}',\n"
        f"         admin: {{listen: '127.0.0.1:{port}'}}}}\n"
        "connections:\n"
        "  rabbit: {kind: amqp, url: '${env:BUFFER_TEST_UNSET_AMQP_URL}'}\n"
        "routes: []\n"
    )
    os.environ["BUFFER_TEST_DATA_DIR"] = str(data_dir)
    try:
        assert main(["buffer", "-c", str(config)]) == 0
        assert "orders      workqueue  3" in capsys.readouterr().out
        assert main(["dlq", "ls", "-c", str(config)]) == 0
        out, err = capsys.readouterr()
        assert "orders.dlq" in out
        assert f"no bridge answers at http://127.0.0.1:{port}" in err and "data dir" in err
    finally:
        del os.environ["BUFFER_TEST_DATA_DIR"]
    # data_dir itself unresolvable: one positioned line, exit 1
    assert main(["buffer", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}:2:" in err and "bridge.data_dir" in err and "BUFFER_TEST_DATA_DIR" in err
    assert "BUFFER_TEST_UNSET_AMQP_URL" not in err


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("streams", "--data-dir", str(tmp_path / "none")) == 1
    assert "no buffer database" in capsys.readouterr().err


def test_dlq_ls_and_show(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "ls", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["orders", "orders.dlq", "2"]
    assert cli("dlq", "show", "orders", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert "orders.dlq: showing 2 of 2" in out
    assert "reason: NOT_FOUND - no exchange 'x'" in out
    assert "from: orders seq 1, deliveries 1" in out
    assert "from: orders (never buffered)" in out
    assert "payload: b'\\x00\\xffbinary'" in out
    assert cli("dlq", "show", "orders.dlq", "--data-dir", str(data_dir), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [m["subject"] for m in shown["messages"]] == ["orders.0", "raw.key"]
    assert shown["messages"][0]["headers"]["X"] == ["0"]
    assert cli("dlq", "show", "nope", "--data-dir", str(data_dir)) == 1
    assert "no stream 'nope'" in capsys.readouterr().err


def test_dlq_replay(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The buffered dead letter goes back; the intake one cannot while the bridge is
    stopped, and `--all` says why and exits 1 (it said "nothing replayed" and exited 0)."""
    assert cli("dlq", "replay", "orders", "--data-dir", str(data_dir), "--all") == 1
    out = capsys.readouterr().out
    assert "replayed 1 message from orders.dlq into orders" in out
    assert "not replayed: #2: never buffered" in out
    assert "only the running bridge does: start it and replay again" in out
    assert "1 dead letter left in orders.dlq" in out
    assert cli("dlq", "replay", "orders", "--data-dir", str(data_dir), "--seq", "9") == 1
    assert "not replayed: #9: no dead letter #9 in orders.dlq" in capsys.readouterr().out
    store = Store.open(data_dir, read_only=True)
    try:
        replayed = store.get_message("orders", 5)
        assert replayed is not None
        assert (replayed.subject, replayed.payload, replayed.headers) == (
            "orders.0",
            b"payload 0",
            {"X": ["0"]},
        )
    finally:
        store.close()


def test_dlq_purge(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("dlq", "purge", "orders", "--data-dir", str(data_dir), "--seq", "2") == 0
    assert "purged 1 dead letter from orders.dlq, 1 left" in capsys.readouterr().out
    assert cli("dlq", "purge", "orders.dlq", "--data-dir", str(data_dir), "--all", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"stream": "orders.dlq", "purged": 1, "left": 0}
    assert cli("dlq", "ls", "--data-dir", str(data_dir)) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["orders", "orders.dlq", "0"]


def test_replay_refuses_while_the_bridge_runs(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = Store.open(data_dir)
    try:
        assert cli("dlq", "replay", "orders", "--data-dir", str(data_dir), "--seq", "1") == 1
        assert "in use by another natsbridge process" in capsys.readouterr().err
        assert cli("streams", "--data-dir", str(data_dir)) == 0  # reading is fine meanwhile
    finally:
        running.close()


def test_formatting_helpers() -> None:
    assert [age(x) for x in (None, 5, 75, 7300, 200_000)] == ["-", "5s", "1m15s", "2h01m", "2d07h"]
    assert [size(x) for x in (10, 2048, 3 * 2**20)] == ["10 B", "2.0 KiB", "3.0 MiB"]


def test_through_the_natsbridge_command(data_dir: Path) -> None:
    """The same commands as the installed CLI runs them (bridge/cli.py registers them)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-m", "natsbridge", "streams", "--data-dir", str(data_dir), "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    names = [s["config"]["name"] for s in json.loads(run.stdout)["streams"]]
    assert names == ["log", "orders", "orders.dlq"]
    run = subprocess.run(
        [sys.executable, "-m", "natsbridge", "dlq", "show", "orders", "--data-dir", str(data_dir)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and "template: no such token" in run.stdout, run.stderr
