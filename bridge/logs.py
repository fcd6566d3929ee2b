"""Logging: one event per line, JSON when not on a terminal, secrets redacted in every record.

Two context variables give every record its place without the connectors passing it on:
the route (`route_context`, set by the route's task; a connector's threads inherit it when
started through bridge.threads) and the connect attempt under way (`connect_attempt`).
The records of a connect attempt that fails are dropped below ERROR: the route logs the
failure once, with its cause. Client libraries ("drivers") log at their kind's quiet
levels (`ConnectorKind.driver_loggers`) unless `--driver-logs` lets them follow the level
(and keeps what a failed connect logged).
"""

from __future__ import annotations

import contextvars
import enum
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_FIELDS = ("route", "connection", "event")
_JSON_FIELDS = (*_FIELDS, "worker", "signal", "routes")  # the text lines say these in words
ROUTE_LOGGER = "natsbridge.route"  # the runtime's own lines about a route


class _Attempt(enum.Enum):
    OPEN = "open"
    CONNECTED = "connected"
    FAILED = "failed"


class ConnectAttempt:
    """One connect of a source or sink: the records logged meanwhile wait for its outcome."""

    def __init__(self) -> None:
        self.state = _Attempt.OPEN
        self.held: list[logging.LogRecord] = []


_route: contextvars.ContextVar[str | None] = contextvars.ContextVar("route", default=None)
_attempt: contextvars.ContextVar[ConnectAttempt | None] = contextvars.ContextVar(
    "connect_attempt", default=None
)
_everything = False  # --driver-logs: a failed connect's records are logged, not dropped


def plural(count: int, noun: str) -> str:
    """`1 route`, `2 routes`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def route_context(name: str | None) -> None:
    """Every record logged from here on in this task (and what it starts) names route `name`."""
    _route.set(name)


def current_route() -> str | None:
    """The route that records logged here name (for a thread started without this context)."""
    return _route.get()


@contextmanager
def connect_attempt() -> Iterator[None]:
    """Hold connector and driver records below ERROR until the connect inside ends.

    On success they are logged (in order); on failure they are dropped, also those that
    arrive later from that connection's threads: the caller logs the one line.
    """
    attempt = ConnectAttempt()
    token = _attempt.set(attempt)
    try:
        yield
    except BaseException:
        attempt.state, attempt.held = _Attempt.FAILED, []
        raise
    finally:
        _attempt.reset(token)
    attempt.state = _Attempt.CONNECTED
    held, attempt.held = attempt.held, []
    for record in held:
        logging.getLogger(record.name).handle(record)


_worker: int | None = None  # this process's number under `run --workers`


def set_worker(index: int) -> None:
    """Every record of this process names worker `index` (`run --workers`)."""
    global _worker
    _worker = index


class RouteContext(logging.Filter):
    """Adds the route from the context to records without one; holds a connect's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _worker is not None:
            record.worker = _worker
        if getattr(record, "route", None) is None:
            route = _route.get()
            if route is not None:
                record.route = route
        attempt = _attempt.get()
        if (
            _everything
            or attempt is None
            or attempt.state is _Attempt.CONNECTED
            or record.levelno >= logging.ERROR
            or record.name == ROUTE_LOGGER
        ):
            return True
        if attempt.state is _Attempt.OPEN:
            attempt.held.append(record)
        return False


class RedactSecrets(logging.Filter):
    """Replaces a record's message and traceback with their text, secrets hidden.

    Runs before any formatter, so that JSON escaping cannot hide a secret from the search,
    and only on log records: logs are not data (see bridge.secrets).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from natsbridge.bridge import secrets

        try:
            message = record.getMessage()
        except Exception:  # a library's bad format arguments must not cost the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = secrets.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = secrets.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """`{"ts": …, "level": …, "logger": …, "msg": …, "route": …}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        return json.dumps(event, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO  natsbridge.route [orders] message` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s%(context)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        parts = [str(getattr(record, name)) for name in _FIELDS if getattr(record, name, None)]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def configure(
    level: str = "info", json_lines: bool | None = None, driver_logs: bool = False
) -> bool:
    """Send natsbridge's logs to stderr; JSON lines unless stderr is a terminal.

    Returns whether the lines are JSON. With `driver_logs`, client libraries log at
    `level` too, and what a failed connect logged is kept; without, they log at the levels
    their kinds declare (quiet).
    """
    from natsbridge.bridge.registry import all_kinds

    global _everything
    _everything = driver_logs

    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RouteContext())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for kind in all_kinds().values():
        for name, quiet in kind.driver_loggers().items():
            logging.getLogger(name).setLevel(logging.NOTSET if driver_logs else quiet)
    return json_lines
