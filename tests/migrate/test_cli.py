"""`natsbridge migrate status|advance|rollback|history`, with lag and parity faked.

The measurements themselves run against the brokers in tests/e2e/test_migration.py.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from natsbridge.bridge.cli import main
from natsbridge.bridge.config import load_config
from natsbridge.bridge.migrate import cli as migrate_cli
from natsbridge.bridge.migrate import preconditions, state
from natsbridge.bridge.migrate.metrics import MigrationCollector
from natsbridge.bridge.migrate.model import Phase
from tests.e2e.bridge_process import free_port
from tests.migrate.conftest import MIGRATIONS, write


@dataclass
class FakeLag:
    legacy: int | None = 0
    nats: int | None = 0


@dataclass
class FakeParity:
    missing: list[Any] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)
    differ: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differ)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "missing": self.missing, "extra": self.extra}


@dataclass
class Sides:
    lag: FakeLag | Exception | list[FakeLag] = field(default_factory=FakeLag)  # a list: in turn
    parity: FakeParity | Exception = field(default_factory=FakeParity)
    asked: list[str] = field(default_factory=list)


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> Sides:
    fake = Sides()

    async def lag_of(config: Any, migration: Any) -> FakeLag:
        fake.asked.append("lag")
        if isinstance(fake.lag, Exception):
            raise fake.lag
        if isinstance(fake.lag, list):
            return fake.lag.pop(0) if len(fake.lag) > 1 else fake.lag[0]
        return fake.lag

    async def parity_of(config: Any, migration: Any) -> FakeParity:
        fake.asked.append("parity")
        if isinstance(fake.parity, Exception):
            raise fake.parity
        return fake.parity

    async def tap(config: Any, migration: Any) -> None:
        fake.asked.append("tap")

    monkeypatch.setattr(preconditions, "LAG_SAMPLE_INTERVAL_S", 0.0)
    monkeypatch.setattr(migrate_cli, "lag_of", lag_of)
    monkeypatch.setattr(migrate_cli, "parity_of", parity_of)
    monkeypatch.setattr(migrate_cli, "open_tap", tap)
    monkeypatch.setattr(migrate_cli, "close_tap", tap)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_advance_through_every_phase_and_back(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    for expected in ("verify", "cutover", "retire", "done"):
        code, out, _ = run(capsys, "migrate", "advance", "orders", "-c", c, "--no-reload")
        assert code == 0 and f"-> {expected}" in out
    assert load_config(config_file, {}).migrations[0].phase is Phase.DONE
    assert sides.asked.count("tap") == 2  # opened entering verify, closed leaving it
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", c)
    assert (
        code == 1 and err.strip() == "natsbridge: migration 'orders' is done: nothing to advance to"
    )
    code, out, _ = run(
        capsys, "migrate", "rollback", "orders", "-c", c, "--to", "mirror", "--no-reload"
    )
    assert code == 0 and "done -> mirror" in out
    changes = state.history(config_file.parent / "data", "orders")
    assert [(ch["from"], ch["to"]) for ch in changes][-1] == ("done", "mirror")
    assert len(changes) == 5 and not any(ch["forced"] for ch in changes)


def test_parity_that_differs_blocks_cutover_and_force_is_recorded(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    run(capsys, "migrate", "advance", "orders", "-c", c, "--no-reload")
    sides.parity = FakeParity(missing=[{"queue": "q", "position": 3}])
    sides.lag = FakeLag(legacy=11, nats=0)
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", c)
    assert code == 1
    assert "blocked: parity differs: 1 missing, 0 extra, 0 different" in err
    assert "blocked: legacy lag 11 is above max_lag 10" in err
    assert load_config(config_file, {}).migrations[0].phase is Phase.VERIFY
    code, out, err = run(
        capsys,
        "migrate",
        "advance",
        "orders",
        "-c",
        c,
        "--force",
        "--reason",
        "drill",
        "--no-reload",
    )
    assert code == 0 and "(forced)" in out and "warning: forced past: parity differs" in err
    last = state.history(config_file.parent / "data", "orders")[-1]
    assert last["forced"] is True and last["reason"].startswith("drill; forced past: parity")


def test_retire_waits_for_the_legacy_side_to_drain(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    data_dir = config_file.parent / "data"
    with state.locked(data_dir):
        state.record(data_dir, "orders", Phase.MIRROR, Phase.CUTOVER, who="cli")
    sides.lag = FakeLag(legacy=14, nats=0)
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", c)
    assert (
        code == 1 and "the legacy side still has 14 messages not copied to NATS (max_lag 10)" in err
    )
    assert set(sides.asked) == {"lag"}  # parity is not what retire needs
    sides.lag = RuntimeError("connection refused")
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", c)
    assert code == 1 and "blocked: lag unknown: RuntimeError: connection refused" in err
    sides.lag = FakeLag(legacy=0, nats=7)
    code, out, _ = run(capsys, "migrate", "advance", "orders", "-c", c, "--no-reload")
    assert code == 0 and "cutover -> retire" in out
    sides.lag = FakeLag(legacy=1, nats=None)  # done: the legacy side drained, to the last
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", c)
    assert code == 1 and "blocked: the legacy side still has 1 messages not copied to NATS\n" in err


def test_status_shows_phase_lag_parity_and_blockers(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    run(capsys, "migrate", "advance", "orders", "-c", c, "--no-reload")
    sides.parity = FakeParity(extra=[{"stream": "ORDERS", "sequence": 9}])
    code, out, _ = run(capsys, "migrate", "status", "-c", c, "--json")
    assert code == 0
    orders, clicks = json.loads(out)["migrations"]
    assert orders["phase"] == "verify" and orders["next"] == "cutover"
    assert orders["routes"] == ["orders.to-nats"]
    assert orders["lag"] == {"legacy": 0, "nats": 0}
    assert orders["parity"]["extra"] == [{"stream": "ORDERS", "sequence": 9}]
    assert orders["blocked_by"] == [
        "parity differs: 0 missing, 1 extra, 0 different (natsbridge migrate verify orders)"
    ]
    assert orders["history"][-1]["to"] == "verify" and orders["since"] > 0
    assert clicks["phase"] == "mirror" and clicks["blocked_by"] == [] and clicks["parity"] is None
    code, out, _ = run(capsys, "migrate", "status", "-c", c)
    assert "orders: verify (orders.to-nats)" in out and "parity DIFFERS" in out
    assert "cutover blocked: parity differs" in out
    assert "ready for verify: natsbridge migrate advance clicks" in out


def test_unknown_names_and_wrong_rollbacks_are_one_line_errors(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    code, _, err = run(capsys, "migrate", "advance", "order", "-c", c)
    assert (code, err) == (
        1,
        "natsbridge: no migration named 'order' — did you mean 'orders'? "
        "(defined: orders, clicks)\n",
    )
    code, _, err = run(capsys, "migrate", "rollback", "orders", "-c", c)
    assert code == 1 and "rollback goes to an earlier phase, found none" in err
    with pytest.raises(SystemExit):
        main(["migrate", "rollback", "orders", "-c", c, "--to", "sideways"])


def test_a_next_phase_the_config_cannot_run_is_refused_before_recording(
    tmp_path: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MIGRATIONS.replace('    back: {{routing_key: "{{{{subject}}}}"}}\n', ""))
    data_dir = tmp_path / "data"
    with state.locked(data_dir):
        state.record(data_dir, "orders", Phase.MIRROR, Phase.VERIFY, who="cli")
    code, _, err = run(capsys, "migrate", "advance", "orders", "-c", str(path), "--force")
    assert code == 1 and "migrations[0].back.routing_key: missing required key" in err
    assert state.read_phases(data_dir)["orders"] is Phase.VERIFY


class _Admin(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        self.calls.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"added": ["orders.to-legacy"], "unchanged": ["orders.to-nats"]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[tuple[int, list[tuple[str, str | None]]]]:
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Admin)
    _Admin.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, _Admin.calls
    server.shutdown()


def test_a_phase_change_asks_the_running_bridge_to_reload(
    tmp_path: Path,
    sides: Sides,
    admin: tuple[int, list[tuple[str, str | None]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, calls = admin
    text = MIGRATIONS.replace(
        'admin: {{listen: "127.0.0.1:{port}"}}',
        'admin: {{listen: "127.0.0.1:{port}", token: s3cret}}',
    )
    path = write(tmp_path, text, port=port)
    code, out, _ = run(capsys, "migrate", "advance", "orders", "-c", str(path))
    assert code == 0 and "the running bridge reloaded: added orders.to-legacy" in out
    assert calls == [("/api/reload", "Bearer s3cret")]
    unused = write(tmp_path, port=free_port())
    code, out, _ = run(capsys, "migrate", "advance", "orders", "-c", str(unused))
    assert (
        code == 0
        and "no running bridge reloaded" in out
        and "applies when the bridge starts" in out
    )


def test_metrics_show_the_live_phase_and_the_last_parity(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    run(capsys, "migrate", "advance", "orders", "-c", c, "--no-reload")
    run(capsys, "migrate", "status", "-c", c)  # measures parity in verify
    config = load_config(config_file, {})
    registry = CollectorRegistry()
    registry.register(MigrationCollector(lambda: config))
    text = generate_latest(registry).decode()
    assert 'natsbridge_migration_phase{migration="orders",phase="verify"} 1.0' in text
    assert 'natsbridge_migration_phase{migration="orders",phase="mirror"} 0.0' in text
    assert 'natsbridge_migration_phase{migration="clicks",phase="mirror"} 1.0' in text
    assert 'natsbridge_migration_parity_ok{migration="orders"} 1.0' in text
    assert 'natsbridge_migration_parity_ok{migration="clicks"}' not in text


def test_rolling_back_out_of_cutover_waits_for_nats_to_legacy(
    config_file: Path, sides: Sides, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(config_file)
    data_dir = config_file.parent / "data"
    with state.locked(data_dir):
        state.record(data_dir, "orders", Phase.MIRROR, Phase.CUTOVER, who="cli")
    sides.lag = FakeLag(legacy=0, nats=3)
    code, _, err = run(capsys, "migrate", "rollback", "orders", "-c", c, "--to", "mirror")
    assert code == 1
    assert "blocked: orders.to-legacy has 3 messages not yet delivered to the legacy side" in err
    assert sides.asked == ["lag"] * preconditions.LAG_SAMPLES  # never at 0
    # Echoes of the mirror's copies keep the count moving: one sample at 0 is enough.
    sides.lag = [FakeLag(legacy=50, nats=2), FakeLag(legacy=50, nats=0), FakeLag(nats=1)]
    sides.asked.clear()
    code, out, _ = run(
        capsys, "migrate", "rollback", "orders", "-c", c, "--to", "mirror", "--no-reload"
    )
    assert code == 0 and "cutover -> mirror" in out
    assert sides.asked == ["lag"] * 3  # no more samples once each side had been at 0
