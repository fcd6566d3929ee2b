"""Logging: one event per line, JSON when not on a terminal, secrets always redacted."""

from __future__ import annotations

import json
import logging
import sys
import time

_FIELDS = ("route", "connection", "event")
# Client libraries log every connection step at INFO; natsbridge logs what matters itself.
_CHATTY_LIBRARIES = ("pika", "kafka", "stomp.py", "nats")
# pika warns of every channel the broker closes, also the 404 of the passive declare an
# AMQP route makes on its first start (and handles); the connector logs real closes.
_QUIET_BELOW_ERROR = ("pika.channel",)
# pika logs each failed connection attempt as eight ERROR lines; the route logs one
# warning with the cause ("cannot connect the source, retrying in 2.0s: ...").
_QUIET_BELOW_CRITICAL = ("pika.adapters",)


class _Redacting(logging.Formatter):
    """Formats a record, then hides every registered secret in the result."""

    def format(self, record: logging.LogRecord) -> str:
        from bridge import secrets

        return secrets.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        return super().format(record)


class JsonFormatter(_Redacting):
    """`{"ts": …, "level": …, "logger": …, "msg": …, "route": …}` per line."""

    def render(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


class TextFormatter(_Redacting):
    """`12:00:01 INFO  natsbridge.route [orders] message` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s%(context)s %(message)s", "%H:%M:%S")

    def render(self, record: logging.LogRecord) -> str:
        parts = [str(getattr(record, name)) for name in _FIELDS if getattr(record, name, None)]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().render(record)


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    """Send natsbridge's logs to stderr; JSON lines unless stderr is a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debug = level.lower() == "debug"
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in _QUIET_BELOW_ERROR:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.ERROR)
    for name in _QUIET_BELOW_CRITICAL:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.CRITICAL)
