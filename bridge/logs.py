"""Logging: one event per line, JSON when not on a terminal, secrets redacted in every record."""

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
        for name in _FIELDS:
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


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    """Send natsbridge's logs to stderr; JSON lines unless stderr is a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactSecrets())
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
