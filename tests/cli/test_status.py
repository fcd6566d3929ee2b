"""`natsbridge status`: the config as the address book, the table, the legend and --watch.

No brokers: an admin server with no routes runs in-process on a free port, and the table
is rendered from /api/routes-shaped dicts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.admin.control import parse_admin_url
from natsbridge.bridge.admin.server import AdminServer
from natsbridge.bridge.admin.status import ERROR_WIDTH, render_table, shorten
from natsbridge.bridge.cli import main
from natsbridge.bridge.config.model import Admin
from natsbridge.bridge.runtime.stats import RouteStats
from tests.e2e.bridge_process import free_port

TOKEN = "status-token-Qv8"
WAIT_S = 60.0  # bound on waiting for output; nothing asserts how fast it comes


@pytest.fixture
def serve() -> Iterator[Callable[..., AdminServer]]:
    servers: list[AdminServer] = []

    def start(port: int, **settings: Any) -> AdminServer:
        server = AdminServer(Admin(listen=f"127.0.0.1:{port}", **settings), [])
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def route(**changes: Any) -> dict[str, Any]:
    """One route as /api/routes shows it."""
    view: dict[str, Any] = {
        "name": "orders",
        "state": "running",
        "ready": True,
        "rates": {
            "in_per_s": 330.0,
            "out_per_s": 329.0,
            "in_avg_per_s": 33.0,
            "out_avg_per_s": 32.9,
        },
        "counters": {"delivered": 7, "dead_lettered": {"poison": 1, "MessageRejected": 2}},
        "buffer": {"depth": 3, "oldest_age_s": 1.25, "bytes": 100},
        "last_error": None,
    }
    view.update(changes)
    return view


def test_status_reads_address_and_token_file_from_the_config_alone(
    tmp_path: Path, serve: Callable[..., AdminServer], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    serve(port, token=TOKEN)
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "version: 1\n"
        "bridge:\n"
        "  id: status-test\n"
        f"  admin: {{listen: '0.0.0.0:{port}', token: '${{file:{tmp_path}/token}}'}}\n"
        "connections:\n"
        "  rabbit: {kind: amqp, url: '${env:STATUS_TEST_UNSET_AMQP_URL}'}\n"
        "routes: []\n"
    )
    assert main(["status", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROUTE") and "0 routes, 0 ready" in out


def test_status_c_reports_a_problem_in_the_admin_section_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("version: 1\nbridge:\n  admin: {token: '${env:STATUS_TEST_UNSET_TOKEN}'}\n")
    assert main(["status", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}:3:" in err and "bridge.admin.token" in err
    assert "STATUS_TEST_UNSET_TOKEN is not set" in err and "Traceback" not in err


def test_status_c_of_a_bridge_without_admin_endpoint_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("version: 1\nbridge:\n  admin: {enabled: false}\n")
    assert main(["status", "-c", str(config)]) == 1
    assert "bridge.admin.enabled is false" in capsys.readouterr().err


def test_an_address_without_a_scheme_means_http(
    serve: Callable[..., AdminServer], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    serve(port)
    assert parse_admin_url(f"127.0.0.1:{port}") == f"http://127.0.0.1:{port}"
    assert main(["status", "--admin", f"127.0.0.1:{port}", "--json"]) == 0
    assert '"routes": []' in capsys.readouterr().out


def test_last_error_is_cut_at_a_word_and_whole_with_wide() -> None:
    error = "ConnectionLost: amqp: AMQPConnectionError: [Errno 111] Connection refused by peer"
    shown = render_table([route(last_error={"message": error, "at": 0.0})])
    cell = shown.splitlines()[1].split("  ")[-1].strip()
    assert cell == "ConnectionLost: amqp: AMQPConnectionError: [Errno 111]…"
    assert render_table([route(last_error={"message": error, "at": 0.0})], wide=True).endswith(
        error
    )


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_shorten_keeps_a_prefix_within_the_width(text: str) -> None:
    shown = shorten(text)
    assert len(shown) <= ERROR_WIDTH
    assert shown == text or (shown.endswith("…") and text.startswith(shown[:-1]))


def test_rates_show_the_last_second_and_the_minute_average() -> None:
    stats = RouteStats()
    for second in range(10):  # idle, then one second of 330 messages
        stats.sample(float(second))
    stats.received = 330
    stats.sample(10.0)
    assert stats.rate_in == 330.0  # a 10 s trailing average read 33
    assert stats.rate_in_avg == 33.0
    row = render_table([route()]).splitlines()[1]
    assert "330 (33)" in row and "329 (33)" in row


def test_legend_explains_states_and_the_not_ready_flag(
    serve: Callable[..., AdminServer], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    serve(port)
    assert main(["status", "--admin", f"http://127.0.0.1:{port}"]) == 0
    out = capsys.readouterr().out
    assert "\n!        not ready (/readyz answers 503); !source, !sink: that end is not" in out
    assert "paused (the" in out and "failed (retried" in out
    rows = render_table(
        [
            route(ready=False, source={"connected": False}, sink={"connected": True}),
            route(
                ready=False, state="paused", source={"connected": True}, sink={"connected": True}
            ),
        ]
    ).splitlines()
    assert rows[1].split("  ")[1] == "running !source" and rows[2].split("  ")[1] == "paused !"


def test_one_route_is_one_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from natsbridge.bridge.admin.status import summary

    assert summary([route()]) == "1 route, 1 ready"
    examples = Path(__file__).resolve().parents[2] / "examples" / "rabbitmq-nats.yaml"
    text = examples.read_text()
    single = tmp_path / "one.yaml"
    single.write_text(text[: text.index("  # NATS JetStream -> RabbitMQ")])
    assert main(["validate", "-c", str(single)]) == 0
    assert ", 1 route\n" in capsys.readouterr().out


def test_watch_outlives_failed_polls_writes_plain_text_and_exits_0_on_ctrl_c(
    tmp_path: Path, serve: Callable[..., AdminServer]
) -> None:
    port = free_port()
    out = tmp_path / "watch.out"
    address = f"http://127.0.0.1:{port}"
    with out.open("w") as sink:
        watch = subprocess.Popen(
            [sys.executable, "-m", "natsbridge", "status", "--admin", address, "--watch", "0.2"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_text(out, "trying again in 0.2s", watch, count=2)
        serve(port)  # the bridge comes (back)
        wait_for_text(out, "0 routes, 0 ready", watch)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=WAIT_S) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
    text = out.read_text()
    assert "\033" not in text and "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "cannot reach the admin endpoint" in text
    assert time.strftime("%Y-%m-%d", time.gmtime()) in text  # each refresh shows its time


def wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], count: int = 1) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        if path.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} x{count} not in:\n{path.read_text()}")
