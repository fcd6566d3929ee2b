"""The admin HTTP endpoint, on loopback by default (`bridge.admin.listen`).

    GET /healthz      200 while the process runs (never needs the token)
    GET /readyz       200 when every route runs with both ends connected; 503 naming
                      the routes that do not
    GET /metrics      Prometheus text exposition
    GET /api/routes   JSON: each route's state, ends, counters, buffer, rates, last error

With `bridge.admin.token` set, every path but /healthz needs `Authorization: Bearer
<token>` (401 otherwise). With `bridge.admin.tls`, it serves HTTPS. It runs on a thread
of its own and only reads the routes' counters, so a slow scraper never slows a route.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bridge import secrets
from bridge.admin.views import RouteCollector, is_ready, route_view
from bridge.config.model import Admin
from bridge.errors import ConfigError
from bridge.runtime.route import RouteRunner

log = logging.getLogger("natsbridge.admin")


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError([f"bridge.admin.listen: expected host:port, found {listen!r}"])
    return host.strip("[]") or "127.0.0.1", int(port)


class AdminServer:
    """Serves the admin endpoint for a set of route runners until `close()`."""

    def __init__(self, settings: Admin, runners: Sequence[RouteRunner]) -> None:
        self.runners = runners
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RouteCollector(runners))
        token = settings.token.get_secret_value() if settings.token else None
        host, port = parse_listen(settings.listen)
        self.httpd = ThreadingHTTPServer((host, port), _handler(self, token))
        self.httpd.daemon_threads = True
        if settings.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.tls.cert_file, settings.tls.key_file)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="natsbridge-admin", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (useful with port 0)."""
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start serving on the admin thread."""
        self.thread.start()
        log.info("admin endpoint on %s:%d", *self.address)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def readiness(self) -> tuple[bool, list[dict[str, Any]]]:
        """Whether every route is ready, and the ones that are not."""
        failing = [
            {
                "route": runner.route.name,
                "state": runner.stats.state.value,
                "source_connected": runner.stats.source_connected,
                "sink_connected": runner.stats.sink_connected,
                "last_error": runner.stats.last_error,
            }
            for runner in self.runners
            if not is_ready(runner)
        ]
        return not failing, failing


def _handler(server: AdminServer, token: str | None) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode() if token else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "natsbridge-admin"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route: Callable[[], None] | None = {
                "/healthz": self.healthz,
                "/readyz": self.readyz,
                "/metrics": self.metrics,
                "/api/routes": self.routes,
            }.get(path)
            if route is None:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
                return
            if path != "/healthz" and not self.authorized():
                self.send_json(
                    HTTPStatus.UNAUTHORIZED,
                    {"error": "a bearer token is required"},
                    {"WWW-Authenticate": 'Bearer realm="natsbridge"'},
                )
                return
            route()

        def authorized(self) -> bool:
            if expected is None:
                return True
            given = self.headers.get("Authorization", "").encode()
            return hmac.compare_digest(given, expected)

        def healthz(self) -> None:
            self.send_json(HTTPStatus.OK, {"status": "ok"})

        def readyz(self) -> None:
            ready, failing = server.readiness()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            self.send_json(status, {"ready": ready, "failing": failing})

        def metrics(self) -> None:
            body = secrets.redact(generate_latest(server.registry).decode()).encode()
            self.send_body(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)

        def routes(self) -> None:
            self.send_json(HTTPStatus.OK, {"routes": [route_view(r) for r in server.runners]})

        def send_json(
            self, status: HTTPStatus, body: object, headers: dict[str, str] | None = None
        ) -> None:
            text = secrets.redact(json.dumps(body, indent=1))
            self.send_body(status, text.encode(), "application/json", headers)

        def send_body(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("admin %s", format % args)

    return Handler
