"""The admin endpoint's control paths (reload, pause, resume) and their client, in-process.

The bridge behind them is a recording stand-in: what is tested here is the HTTP side
(methods, token, refusals, answers) and `natsbridge reload`'s client, not the reload
itself (tests/e2e/test_reload.py runs that against the brokers).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from natsbridge.bridge.admin.control import (
    AdminUnavailable,
    admin_request,
    admin_url,
    reload_bridge,
    reload_running,
)
from natsbridge.bridge.admin.server import AdminServer, ControlError
from natsbridge.bridge.config.model import Admin
from natsbridge.bridge.errors import BridgeError, ConfigError

TOKEN = "s3cret-Zq7"
PROBLEM = "bridge.yaml:7:5: routes[0].from.exchnage: unknown key 'exchnage'"


class Recorder:
    """Answers control calls as a bridge would, and remembers them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def call(self, action: str, argument: str) -> dict[str, Any]:
        self.calls.append((action, argument))
        if argument == "missing":
            raise ControlError(404, "no route named 'missing'")
        if action == "reload" and self.calls.count(("reload", "api")) > 1:  # the second
            raise ControlError(422, "config refused; the running config stays", [PROBLEM])
        return {"action": action, "argument": argument}


@pytest.fixture
def served() -> Iterator[tuple[AdminServer, Recorder]]:
    recorder = Recorder()
    server = AdminServer(Admin(listen="127.0.0.1:0", token=TOKEN), [], recorder)
    server.start()
    yield server, recorder
    server.close()


def request(
    server: AdminServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(*server.address, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.headers), json.loads(response.read())
    finally:
        connection.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_control_paths_take_post_with_the_token_only(served: Any) -> None:
    server, recorder = served
    for path in ("/api/reload", "/api/routes/orders/pause", "/api/routes/orders/resume"):
        status, headers, _ = request(server, "GET", path, AUTH)
        assert status == 405 and headers["Allow"] == "POST", path
        assert request(server, "POST", path)[0] == 401
        assert request(server, "POST", path, {"Authorization": "Bearer wrong"})[0] == 401
    assert recorder.calls == []
    assert request(server, "POST", "/api/routes/orders/pause", AUTH)[2] == {
        "action": "pause",
        "argument": "orders",
    }
    assert request(server, "POST", "/api/routes/orders/resume", AUTH)[0] == 200
    assert request(server, "POST", "/api/reload", AUTH)[0] == 200
    assert recorder.calls == [("pause", "orders"), ("resume", "orders"), ("reload", "api")]
    assert request(server, "POST", "/api/routes/orders/stop", AUTH)[0] == 404
    assert request(server, "POST", "/api/routes", AUTH)[0] == 405  # still GET only


def test_refusals_carry_their_status_and_problems(served: Any) -> None:
    server, _ = served
    status, _, body = request(server, "POST", "/api/routes/missing/pause", AUTH)
    assert status == 404 and "missing" in body["error"]
    request(server, "POST", "/api/reload", AUTH)
    status, _, body = request(server, "POST", "/api/reload", AUTH)
    assert status == 422
    assert body == {"error": "config refused; the running config stays", "problems": [PROBLEM]}


def test_a_web_page_cannot_post(served: Any) -> None:
    server, recorder = served
    status, _, body = request(
        server, "POST", "/api/reload", {**AUTH, "Origin": "http://evil.example"}
    )
    assert status == 403 and "web pages" in body["error"]
    assert recorder.calls == []


def test_without_a_bridge_control_answers_503() -> None:
    server = AdminServer(Admin(listen="127.0.0.1:0"), [])
    server.start()
    try:
        assert request(server, "POST", "/api/reload")[0] == 503
    finally:
        server.close()


def test_the_client_returns_outcomes_and_raises_problems(served: Any) -> None:
    server, _ = served
    url = "http://{}:{}".format(*server.address)
    assert reload_bridge(url, TOKEN) == {"action": "reload", "argument": "api"}
    with pytest.raises(ConfigError) as refused:
        reload_bridge(url, TOKEN)
    assert refused.value.problems == [PROBLEM]
    with pytest.raises(AdminUnavailable, match=r"401.*--token"):
        admin_request(url, "/api/reload", None, "POST")
    listen = "{}:{}".format(*server.address)
    with pytest.raises(ConfigError):  # the recorder refuses every reload after the first
        reload_running(Admin(listen=listen, token=TOKEN))
    with pytest.raises(AdminUnavailable, match="401"):
        reload_running(Admin(listen=listen, token="wrong"))
    with pytest.raises(AdminUnavailable, match="SIGHUP"):
        reload_running(Admin(listen=listen, enabled=False))


def test_the_cli_prints_problems_one_per_line(served: Any) -> None:
    server, _ = served
    url = "http://{}:{}".format(*server.address)
    command = [sys.executable, "-m", "natsbridge"]
    env = {"NATSBRIDGE_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    first = subprocess.run(
        [*command, "reload", "--admin", url], capture_output=True, text=True, env=env, timeout=60
    )
    assert first.returncode == 0 and "unchanged: -" in first.stdout, first.stderr
    second = subprocess.run(
        [*command, "reload", "--admin", url], capture_output=True, text=True, env=env, timeout=60
    )
    assert second.returncode == 1
    assert second.stderr.splitlines() == [PROBLEM, "1 problem found"]
    paused = subprocess.run(
        [*command, "pause", "orders", "--admin", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert paused.returncode == 0 and "orders: paused" in paused.stdout


@pytest.mark.parametrize(
    ("listen", "tls", "url"),
    [
        ("127.0.0.1:7777", False, "http://127.0.0.1:7777"),
        ("0.0.0.0:9000", True, "https://127.0.0.1:9000"),
        ("[::1]:7777", False, "http://[::1]:7777"),
        ("[::]:7777", False, "http://127.0.0.1:7777"),
    ],
)
def test_admin_url_of_the_settings(listen: str, tls: bool, url: str) -> None:
    settings = Admin(listen=listen, tls={"cert_file": "c", "key_file": "k"} if tls else None)
    assert admin_url(settings) == url


def test_a_taken_port_is_one_line_not_a_traceback(served: Any) -> None:
    server, _ = served
    taken = "{}:{}".format(*server.address)
    with pytest.raises(BridgeError, match=f"bridge.admin.listen: cannot listen on {taken}: "):
        AdminServer(Admin(listen=taken), [])
