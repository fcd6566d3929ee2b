"""stomp.py's exceptions and the brokers' ERROR frames, translated into the bridge's error tree.

Every stomp.py exception that reaches a connector method passes through `translate()`
(or the `translating()` context manager) and leaves as a bridge.errors type:

    stomp.py / socket                                bridge error
    ───────────────────────────────────────────────  ─────────────────────────────────────
    ConnectFailedException                           ConnectionLost (cannot connect)
    NotConnectedException, ConnectionClosedException ConnectionLost
    OSError (broken pipe, reset, TLS errors …)        ConnectionLost
    anything else                                    ConnectionLost (the runtime reconnects)

A broker's ERROR frame becomes a typed error with `from_error_frame()`, like nats.py's
`APIError.from_error()`. STOMP has no error codes, so the frame's ``message`` header and
the first line of its body are matched against what ActiveMQ Classic and RabbitMQ write:

    ERROR frame says                                   error                 why
    ─────────────────────────────────────────────────  ────────────────────  ─────────────────
    "User name [x] or password is invalid" (ActiveMQ)  StompAccessRefused    retrying with the
    "Access refused for user 'x'", "Bad CONNECT",      (permanent)           same login cannot
    "Virtual host 'v' access denied" (RabbitMQ),                              help
    "not authorized", "access_refused"
    "not_found", "no exchange", "no queue"             StompNotFound         the destination
                                                       (permanent)           does not exist
    "Client: x already connected" (ActiveMQ client-id  StompUnavailable      the old connection
    still held by a dead connection), "resource_locked" (retryable)          goes away
    "connection_forced", "internal_error", "timeout"
    anything else                                      StompRefused          protocol misuse or
                                                       (permanent)           a refused message

The text is the broker's, never the passcode (it is redacted all the same); ActiveMQ's
Java stack traces are cut to their first line.

    PermanentError
    └── StompRefused               an ERROR frame retrying cannot fix
        ├── StompAccessRefused     login, virtual host or permission refused
        └── StompNotFound          no such destination (LookupError)
    RetryableError
    └── StompUnavailable           an ERROR frame that may pass
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from stomp import exception as se  # type: ignore[import-untyped]

from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError, RetryableError
from natsbridge.bridge.secrets import redact

MAX_DETAIL_CHARS = 300
"""How much of an ERROR frame's body an error message keeps."""

_ACCESS = re.compile(
    r"password is invalid|access refused|access_refused|access denied|not authori[sz]ed"
    r"|authenticat|login|bad connect",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"not_found|not found|no exchange|no queue", re.IGNORECASE)
_RETRYABLE = re.compile(
    r"already connected|resource_locked|resource-locked|connection_forced|internal_error"
    r"|timed? ?out|shutting down|server shutdown",
    re.IGNORECASE,
)


class StompRefused(PermanentError):
    """The broker answered with an ERROR frame that retrying cannot fix."""

    def __init__(self, message: str, detail: str = "", where: str = "") -> None:
        self.message = message
        self.detail = detail
        super().__init__(_describe(message, detail, where))


class StompAccessRefused(StompRefused):
    """Login, virtual host or permission refused."""


class StompNotFound(StompRefused, LookupError):
    """The destination does not exist (RabbitMQ ``/exchange/X``, ``/amq/queue/Q``)."""


class StompUnavailable(RetryableError):
    """An ERROR frame that may pass, such as a durable client-id still held by a dead connection."""

    def __init__(self, message: str, detail: str = "", where: str = "") -> None:
        self.message = message
        self.detail = detail
        super().__init__(_describe(message, detail, where))


def from_error_frame(
    headers: Mapping[str, str],
    body: bytes | str | None,
    where: str = "",
    secret: str | None = None,
) -> BridgeError:
    """The bridge error for a broker's ERROR frame (see the module doc); never shows `secret`."""
    message = _clean(headers.get("message", ""), secret) or "ERROR frame without a message"
    detail = _first_line(body, secret)
    text = f"{message} {detail}"
    if _RETRYABLE.search(text):
        return StompUnavailable(message, detail, where)
    if _ACCESS.search(text):
        return StompAccessRefused(message, detail, where)
    if _NOT_FOUND.search(text):
        return StompNotFound(message, detail, where)
    return StompRefused(message, detail, where)


def translate(exc: BaseException, where: str = "") -> BridgeError:
    """The bridge error for any exception stomp.py or the socket raised; bridge errors pass."""
    if isinstance(exc, BridgeError):
        return exc
    prefix = f"stomp: {where}: " if where else "stomp: "
    if isinstance(exc, se.ConnectFailedException):
        error: BridgeError = ConnectionLost(f"{prefix}cannot connect")
    elif isinstance(exc, se.NotConnectedException | se.ConnectionClosedException):
        error = ConnectionLost(f"{prefix}not connected")
    elif isinstance(exc, OSError):
        error = ConnectionLost(f"{prefix}{type(exc).__name__}: {exc}".rstrip(": "))
    else:
        error = ConnectionLost(f"{prefix}unexpected {type(exc).__name__}: {exc}".rstrip(": "))
    error.__cause__ = exc
    return error


@contextmanager
def translating(where: str = "") -> Iterator[None]:
    """Re-raise any stomp.py or socket exception in the block as its bridge error."""
    try:
        yield
    except BridgeError:
        raise
    except (se.StompException, OSError) as exc:
        raise translate(exc, where) from exc


def _describe(message: str, detail: str, where: str) -> str:
    text = f"stomp: {where}: {message}" if where else f"stomp: {message}"
    if detail and detail.rstrip(".") != message.rstrip("."):
        text += f" ({detail})"
    return text


def _clean(text: str, secret: str | None) -> str:
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "***")
    return redact(text)[:MAX_DETAIL_CHARS]


def _first_line(body: bytes | str | None, secret: str | None) -> str:
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for line in text.splitlines():
        if line.strip():
            return _clean(line, secret)
    return ""
