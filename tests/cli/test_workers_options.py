"""`run --workers N` and the `--worker I/N` a worker gets: parsing and per-worker settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.cli import build_parser
from natsbridge.bridge.config.model import Admin, BridgeSettings
from natsbridge.bridge.errors import ConfigError
from natsbridge.bridge.supervisor import MAX_WORKERS, parse_worker, worker_settings


@given(st.integers(1, 1000).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_worker_of_round_trips(pair: tuple[int, int]) -> None:
    assert parse_worker(f"{pair[0]}/{pair[1]}") == pair


@given(st.text(max_size=12))
def test_anything_else_is_refused_with_the_expected_form(text: str) -> None:
    index, sep, count = text.partition("/")
    if sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count):
        return
    with pytest.raises(ValueError, match=r"expected I/N with 1 <= I <= N"):
        parse_worker(text)


@pytest.mark.parametrize("value", ["0", "-1", "x", str(MAX_WORKERS + 1)])
def test_a_wrong_worker_count_is_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "-c", "x.yaml", "--workers", value])
    assert exit_.value.code == 2
    assert f"expected a number from 1 to {MAX_WORKERS}" in capsys.readouterr().err


@given(st.integers(1, 64), st.integers(1, 60000))
def test_each_worker_has_its_own_data_dir_replica_and_admin_port(index: int, port: int) -> None:
    bridge = BridgeSettings(
        id="b", data_dir="/var/lib/nb/", admin=Admin(listen=f"127.0.0.1:{port}")
    )
    mine = worker_settings(bridge, index)
    assert mine.data_dir == f"/var/lib/nb/worker-{index}"
    assert mine.replica == f"worker-{index}"
    assert mine.admin.listen == f"127.0.0.1:{port + index - 1}"
    named = worker_settings(bridge.model_copy(update={"replica": "host-a"}), index)
    assert named.replica == f"host-a-worker-{index}"


def test_a_worker_port_beyond_65535_is_one_line() -> None:
    bridge = BridgeSettings(id="b", admin=Admin(listen="127.0.0.1:65535"))
    assert worker_settings(bridge, 1).admin.listen == "127.0.0.1:65535"
    with pytest.raises(ConfigError, match=r"worker 2 would listen on port 65536"):
        worker_settings(bridge, 2)
