"""The admin server against hostile clients, in-process on a real socket (no brokers).

Waits are bounded by CLIENT_TIMEOUT, far above the server's own timeouts; nothing asserts
how fast an answer comes, only that it comes.
"""

from __future__ import annotations

import http.client
import json
import platform
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsbridge.bridge import secrets
from natsbridge.bridge.admin.server import MAX_REQUEST_BYTES, AdminServer
from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.model import Admin
from natsbridge.bridge.runtime.route import RouteRunner

CLIENT_TIMEOUT = 30.0
TOKEN = "🔑-jetón-à"  # UTF-8 that ends in byte 0xA0, which str.strip() would eat
PATHS = ("/healthz", "/readyz", "/metrics", "/api/routes")
Response = tuple[int, http.client.HTTPMessage, bytes]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Harness:
    """Admin servers and raw clients, all closed after the test (clients first)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[AdminServer] = []
        self.sockets: list[socket.socket] = []
        self.tls = False

    def serve(self, tls: bool = False, **settings: Any) -> AdminServer:
        """Start an admin server with no routes on a free loopback port."""
        self.tls = tls
        if tls:
            settings["tls"] = _certificate(self.directory)
        admin = AdminServer(Admin(listen="127.0.0.1:0", **settings), [])
        admin.start()
        self.servers.append(admin)
        return admin

    def connect(self, handshake: bool = True) -> socket.socket:
        """A TCP connection to the last server (TLS-wrapped when it serves TLS and asked)."""
        sock = socket.create_connection(self.servers[-1].address, timeout=CLIENT_TIMEOUT)
        if self.tls and handshake:
            sock = _client_context().wrap_socket(sock)
        self.sockets.append(sock)
        return sock

    def request(self, method: str, path: str, headers: dict[str, Any] | None = None) -> Response:
        """One well-behaved request to the last server."""
        host, port = self.servers[-1].address
        connection = (
            http.client.HTTPSConnection(
                host, port, timeout=CLIENT_TIMEOUT, context=_client_context()
            )
            if self.tls
            else http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
        )
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def exchange(self, data: bytes) -> bytes:
        """Send raw bytes, read the answer until the server closes."""
        sock = self.connect()
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for admin in self.servers:
            admin.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _certificate(directory: Path) -> dict[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "admin.pem", directory / "admin.key"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return {"cert_file": str(cert), "key_file": str(key)}


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # a throw-away self-signed certificate
    context.verify_mode = ssl.CERT_NONE
    return context


def _closed_by_server(
    socks: list[socket.socket], until: float, enough: int | None = None
) -> list[socket.socket]:
    """The sockets the server closes (EOF or reset) before `until`, or once `enough` are."""
    closed: list[socket.socket] = []
    while len(closed) < (enough or len(socks)) and time.monotonic() < until:
        open_ = [sock for sock in socks if sock not in closed]
        readable, _, _ = select.select(open_, [], [], 0.2)
        for sock in readable:
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed.append(sock)
            except TimeoutError:
                pass  # readable for a TLS record with no data in it (a session ticket)
            except OSError:
                closed.append(sock)
    return closed


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_idle_connections_neither_block_healthz_nor_stay_forever(
    harness: Harness, tls: bool
) -> None:
    harness.serve(tls=tls, max_connections=8, request_timeout=2)
    idle = [harness.connect(handshake=False) for _ in range(7)]  # TCP only, not a byte sent
    assert harness.request("GET", "/healthz")[0] == 200
    until = time.monotonic() + CLIENT_TIMEOUT
    assert len(_closed_by_server(idle, until)) == len(idle)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_slowloris_is_cut_off(harness: Harness, tls: bool) -> None:
    harness.serve(tls=tls, request_timeout=1)
    slow = harness.connect()
    slow.sendall(b"GET /healthz HTTP/1.0\r\nX-Slow: ")
    until = time.monotonic() + CLIENT_TIMEOUT
    cut = False
    while not cut and time.monotonic() < until:
        try:
            slow.sendall(b"a")  # one byte per 0.2 s: each read is quick, the request never ends
        except OSError:
            cut = True
        cut = cut or bool(_closed_by_server([slow], time.monotonic() + 0.2))
    assert cut
    assert harness.request("GET", "/healthz")[0] == 200


def test_connection_flood_is_bounded(harness: Harness) -> None:
    harness.serve(max_connections=8, request_timeout=120)
    flood = [harness.connect() for _ in range(40)]
    closed = _closed_by_server(flood, time.monotonic() + CLIENT_TIMEOUT, enough=32)
    assert len(closed) == 32  # the 8 first hold every slot; the rest are closed at once
    workers = [t for t in threading.enumerate() if "process_request_thread" in t.name]
    assert len(workers) <= 8
    for sock in flood:
        sock.close()
    # the slots come back: a well-behaved client is served again
    until = time.monotonic() + CLIENT_TIMEOUT
    status = None
    while status != 200 and time.monotonic() < until:
        try:
            status = harness.request("GET", "/healthz")[0]
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    assert status == 200


def test_oversized_request_head_gets_431(harness: Harness) -> None:
    harness.serve()
    head = b"GET /healthz HTTP/1.0\r\nX-Pad: "
    answer = harness.exchange(head + b"a" * (MAX_REQUEST_BYTES - len(head)))
    assert answer.startswith(b"HTTP/1.0 431 ")
    assert "exceed" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_head_answers_like_get_without_a_body(harness: Harness, tls: bool) -> None:
    harness.serve(tls=tls)
    for path in PATHS:
        status, _, body = harness.request("GET", path)
        answer = harness.exchange(f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") and status == 200
        if path != "/metrics":  # whose process_* values move between two requests
            assert f"Content-Length: {len(body)}".encode() in head
        assert b"Content-Length: " in head and rest == b""


def test_metrics_carry_process_python_and_build_info(harness: Harness) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from natsbridge import __version__

    harness.serve()
    status, _, body = harness.request("GET", "/metrics")
    assert status == 200
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert name in samples, sorted(samples)
    assert any(name.startswith("python_gc_") for name in samples)
    build = samples["natsbridge_build_info"]
    assert build.value == 1
    assert build.labels == {"version": __version__, "python": platform.python_version()}


def test_unknown_paths_and_methods_answer_json(harness: Harness) -> None:
    harness.serve()
    status, headers, body = harness.request("GET", "/nope")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert "/nope" in json.loads(body)["error"]
    for method, path in [("POST", "/healthz"), ("DELETE", "/metrics"), ("OPTIONS", "/readyz")]:
        status, headers, body = harness.request(method, path)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
        assert method in json.loads(body)["error"]
    status, headers, body = harness.request("BREW", "/healthz")
    assert status == 501 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]


@pytest.mark.parametrize("token", ["s3cret-Zq7", TOKEN], ids=["ascii", "utf8"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_token_is_accepted_with_any_scheme_case(harness: Harness, token: str, scheme: str) -> None:
    harness.serve(token=token)
    for path in PATHS:
        status, _, _ = harness.request(
            "GET", path, {"Authorization": f"{scheme} ".encode() + token.encode()}
        )
        assert status == 200, path


def test_wrong_or_missing_token_gets_401(harness: Harness) -> None:
    harness.serve(token=TOKEN)
    token = TOKEN.encode()
    refused: list[dict[str, Any]] = [
        {},
        {"Authorization": b"Bearer"},
        {"Authorization": b"Bearer wrong"},
        {"Authorization": b"Basic " + token},
        {"Authorization": b"Bearer " + token[:-1]},
        {"Authorization": b"Bearer " + token + b"x"},
        # what the old code wanted: the header's Latin-1 reading, encoded again as UTF-8
        {"Authorization": b"Bearer " + token.decode("latin-1").encode()},
    ]
    for headers in refused:
        status, answer, body = harness.request("GET", "/api/routes", headers)
        assert status == 401, headers
        assert answer["WWW-Authenticate"] == 'Bearer realm="natsbridge"'
        assert json.loads(body)["error"]
    assert harness.request("GET", "/healthz")[0] == 200


def test_names_that_contain_a_secrets_text_are_shown_as_they_are(harness: Harness) -> None:
    """Text search for secrets over whole bodies turned 'orders-to-nats' into '***-to-nats'."""
    config = load_config(EXAMPLES / "rabbitmq-nats.yaml", {})
    route = next(r for r in config.routes if r.name == "orders-to-nats")
    runner = RouteRunner(route, None, None, None, None)  # type: ignore[arg-type]
    secrets.register("orders")  # say, a password that happens to be a word in a name
    admin = AdminServer(Admin(listen="127.0.0.1:0"), [runner])
    admin.start()
    harness.servers.append(admin)
    status, _, body = harness.request("GET", "/api/routes")
    assert status == 200
    assert json.loads(body)["routes"][0]["name"] == "orders-to-nats"
    status, _, body = harness.request("GET", "/metrics")
    assert status == 200 and b'route="orders-to-nats"' in body
