"""The admin HTTP endpoint, on loopback by default (`bridge.admin.listen`).

    GET /healthz      200 while the process runs (never needs the token)
    GET /readyz       200 when every route runs with both ends connected; 503 naming
                      the routes that do not
    GET /metrics      Prometheus text exposition
    GET /api/routes   JSON: each route's state, ends, counters, buffer, rates, last error
    POST /api/reload  read the config again and apply it (bridge.runtime.reload); 422
                      with every problem when it is invalid (the running config stays)
    POST /api/routes/NAME/pause, /resume    stop or restart reading one route's source
    GET /api/dlq, /api/dlq/STREAM             dead letters: each stream's, or one's
    POST /api/dlq/STREAM/replay|purge         ?seq=N (repeated) or ?all=1
    POST /api/dlq/ROUTE/replay?destination=1  the route's dead_letters: destination [&limit=N]

HEAD works wherever GET does; other methods get 405 (with Allow), other paths 404, both
as JSON. With `bridge.admin.token` set, every path but /healthz needs `Authorization:
Bearer <token>` (scheme in any case; the token compared as UTF-8 bytes in constant time;
401 otherwise). A POST that carries an `Origin` header (a web page's script or form) is
refused with 403, so that a page in an operator's browser cannot reach a loopback admin
endpoint. With `bridge.admin.tls`, it serves HTTPS.

Hostile clients cannot stall it: the accept loop never reads from a client. Each
connection gets a thread of its own, at most `max_connections` at once (more are closed
as soon as they are accepted); in that thread the TLS handshake, then the request line
and headers, must each arrive within `request_timeout` in total (a trickle of bytes does
not reset the clock), and the request line and headers are bounded by MAX_REQUEST_BYTES
(431 beyond). One request per connection (HTTP/1.0 style), and request bodies are never
read. The server only reads the routes' counters, so a slow scraper never slows a route.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from natsbridge.bridge.admin.views import BuildInfo, RouteCollector, is_ready, route_view
from natsbridge.bridge.config.model import Admin, AdminTls
from natsbridge.bridge.errors import BridgeError, ConfigError
from natsbridge.bridge.runtime.route import RouteRunner

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("natsbridge.admin")

MAX_REQUEST_BYTES = 16 * 1024  # request line + headers; real admin requests are < 1 KiB
ALLOWED_METHODS = "GET, HEAD"
ROUTE_ACTION = re.compile(r"/api/routes/([^/]+)/(pause|resume)")
DESTINATION_REPLAY_LIMIT = 10_000  # dead letters one replay of a destination moves at most
DLQ_PATH = re.compile(r"/api/dlq(?:/([^/]+)(?:/(replay|purge))?)?")


class ControlError(BridgeError):
    """A control request (reload, pause, resume) that was refused: HTTP status and why."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []


class Control(Protocol):
    """What the admin endpoint controls: the running bridge (bridge.runtime.bridge)."""

    def call(self, action: str, argument: str) -> dict[str, Any]:
        """Run `action` (reload, pause, resume) on the bridge and wait for its outcome.

        Called on an admin thread; raises ControlError when refused.
        """


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError([f"bridge.admin.listen: expected host:port, found {listen!r}"])
    return host.strip("[]") or "127.0.0.1", int(port)


class AdminServer:
    """Serves the admin endpoint for a set of route runners until `close()`."""

    def __init__(
        self, settings: Admin, runners: Sequence[RouteRunner], control: Control | None = None
    ) -> None:
        self.runners = runners  # replaced whole by a reload; read at request time
        self.control = control
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RouteCollector(lambda: self.runners))
        self.registry.register(BuildInfo())
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, …_memory_bytes
        PlatformCollector(registry=self.registry)  # python_info
        GCCollector(registry=self.registry)  # python_gc_*
        token = settings.token.get_secret_value() if settings.token else None
        handler = _handler(self, token, settings.request_timeout)
        try:
            self.httpd = _BoundedServer(parse_listen(settings.listen), handler, settings)
        except OSError as exc:  # the port is taken, the address is not this host's
            raise BridgeError(
                f"bridge.admin.listen: cannot listen on {settings.listen}: {exc.strerror}"
            ) from None
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


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them, TLS in that thread."""

    daemon_threads = True
    # The listen backlog (stdlib default 5): under a flood, a well-behaved client waits
    # in the kernel's queue for the accept loop, not for SYN retries of 1 s, 3 s, ...
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        settings: Admin,
    ) -> None:
        super().__init__(address, handler)
        self.max_connections = settings.max_connections
        self.slots = threading.BoundedSemaphore(settings.max_connections)
        self.request_timeout = settings.request_timeout
        self.tls = _tls_context(settings.tls) if settings.tls else None

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accept loop: it must never wait, so a connection over the bound
        # is closed right away rather than queued.
        if not self.slots.acquire(blocking=False):
            log.debug("admin: %d connections open, closing one more", self.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.request_timeout)
            if self.tls is not None:
                # The socket timeout bounds the whole handshake, not each read of it.
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # a client that hung up, stalled or failed TLS
            log.debug("admin: connection from %s ended: %s", client_address[0], error)
        else:
            log.exception("admin: request from %s failed", client_address[0])


def _tls_context(tls: AdminTls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class _RequestTooLarge(Exception):
    """The request line and headers went over MAX_REQUEST_BYTES."""


class _BoundedReads(io.RawIOBase):
    """A socket's reads under one deadline and one byte budget, so a trickle cannot last."""

    def __init__(self, sock: socket.socket, seconds: float, max_bytes: int) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + seconds
        self.bytes_left = max_bytes

    def readable(self) -> bool:
        """Always: it is the request's read side."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Read what arrives before the deadline, never more than the budget allows."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        if self.bytes_left <= 0:
            raise _RequestTooLarge
        self.sock.settimeout(left)
        with memoryview(buffer) as view:
            count = self.sock.recv_into(view[: self.bytes_left])
        self.bytes_left -= count
        return count


def _handler(
    server: AdminServer, token: str | None, timeout: float
) -> type[BaseHTTPRequestHandler]:
    expected = token.encode() if token else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "natsbridge-admin"
        # Until parse_request sets them, so an answer before the request line still works.
        command, request_version = "", "HTTP/1.0"

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # replaced by reads under a deadline and a size bound
            self.rfile = io.BufferedReader(
                _BoundedReads(self.connection, timeout, MAX_REQUEST_BYTES)
            )

        def handle(self) -> None:
            try:
                super().handle()
            except _RequestTooLarge:
                self.send_error(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request line and headers exceed {MAX_REQUEST_BYTES} bytes",
                )

        def respond(self) -> None:
            path = self.path.split("?", 1)[0]
            allowed = ALLOWED_METHODS
            view: Callable[[], None] | None = {
                "/healthz": self.healthz,
                "/readyz": self.readyz,
                "/metrics": self.metrics,
                "/api/routes": self.routes,
            }.get(path)
            action = ROUTE_ACTION.fullmatch(path)
            if path == "/api/reload":
                view, allowed = (lambda: self.control("reload", "api")), "POST"
            elif action is not None:
                name, verb = unquote(action[1]), action[2]
                view, allowed = (lambda: self.control(verb, name)), "POST"
            elif (dlq := DLQ_PATH.fullmatch(path)) is not None:
                asked = dlq_request(dlq[1], dlq[2], self.path)
                view = lambda: self.control("dlq", asked)  # noqa: E731
                allowed = "POST" if dlq[2] else ALLOWED_METHODS
            if view is None:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
            elif self.command not in allowed.split(", "):
                self.send_json(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {"error": f"{self.command} is not allowed; use {allowed}"},
                    {"Allow": allowed},
                )
            elif path != "/healthz" and not self.authorized():
                self.send_json(
                    HTTPStatus.UNAUTHORIZED,
                    {"error": "a bearer token is required"},
                    {"WWW-Authenticate": 'Bearer realm="natsbridge"'},
                )
            elif self.command == "POST" and "Origin" in self.headers:
                self.send_json(
                    HTTPStatus.FORBIDDEN, {"error": "control requests from web pages are refused"}
                )
            else:
                view()

        def control(self, action: str, argument: str) -> None:
            if server.control is None:
                self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no bridge to control"})
                return
            try:
                outcome = server.control.call(action, argument)
            except ControlError as exc:
                body: dict[str, Any] = {"error": str(exc)}
                if exc.problems:
                    body["problems"] = exc.problems
                self.send_json(HTTPStatus(exc.status), body)
                return
            except BridgeError as exc:  # a buffer that failed while routes were restarted
                self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
                return
            self.send_json(HTTPStatus.OK, outcome)

        # Every method HTTP defines lands in respond(); unknown ones get a JSON 501.
        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = respond
        do_OPTIONS = do_TRACE = do_CONNECT = respond

        def authorized(self) -> bool:
            if expected is None:
                return True
            scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
            # Header values arrive decoded as Latin-1: encoding back gives the bytes as
            # sent, so a UTF-8 token is compared as its UTF-8 bytes. Only space and tab
            # are stripped: str.strip() would eat bytes 0x85 and 0xA0 of UTF-8 text.
            given = credentials.strip(" \t").encode("latin-1")
            return hmac.compare_digest(given, expected) and scheme.lower() == "bearer"

        def healthz(self) -> None:
            self.send_json(HTTPStatus.OK, {"status": "ok"})

        def readyz(self) -> None:
            ready, failing = server.readiness()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            self.send_json(status, {"ready": ready, "failing": failing})

        def metrics(self) -> None:
            # Nothing to mask: labels are names from the config, and the one free text
            # shown anywhere here (a route's last error) was redacted when it was recorded.
            self.send_body(HTTPStatus.OK, generate_latest(server.registry), CONTENT_TYPE_LATEST)

        def routes(self) -> None:
            self.send_json(HTTPStatus.OK, {"routes": [route_view(r) for r in server.runners]})

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # The stdlib's own refusals (400, 414, 431, 501) answer in JSON like the rest.
            self.close_connection = True
            status = HTTPStatus(code)
            self.send_json(status, {"error": message or status.phrase})

        def send_json(
            self, status: HTTPStatus, body: object, headers: dict[str, str] | None = None
        ) -> None:
            self.send_body(status, json.dumps(body, indent=1).encode(), "application/json", headers)

        def send_body(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.connection.settimeout(timeout)  # the answer gets a timeout of its own
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("admin %s", format % args)

    return Handler


def dlq_request(stream: str | None, verb: str | None, target: str) -> str:
    """The `dlq` control request (JSON) a /api/dlq path asks for.

    GET /api/dlq: ls; GET /api/dlq/STREAM?from_seq=N&limit=N: show; POST
    /api/dlq/STREAM/replay|purge?seq=N&seq=M (no seq: every dead letter).
    """
    query = parse_qs(target.partition("?")[2])

    def number(name: str, default: int) -> int:
        values = query.get(name)
        return int(values[0]) if values and values[0].isdecimal() else default

    if stream is None:
        return json.dumps({"action": "ls"})
    name = unquote(stream)
    if verb is None:
        asked = {"from_seq": number("from_seq", 1), "limit": number("limit", 20)}
        return json.dumps({"action": "show", "stream": name, **asked})
    if verb == "replay" and query.get("destination") == ["1"]:
        asked = {"destination": True, "limit": number("limit", DESTINATION_REPLAY_LIMIT)}
        return json.dumps({"action": verb, "stream": name, **asked})
    every = query.get("all") == ["1"]
    seqs = None if every else [int(v) for v in query.get("seq", []) if v.isdecimal()]
    return json.dumps({"action": verb, "stream": name, "seqs": seqs})
