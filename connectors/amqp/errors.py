"""pika's exceptions and AMQP reply codes, translated into the bridge's error tree.

Every pika exception that reaches a connector method passes through `translate()` (a
function) or `translating()` (a context manager) and leaves as a bridge.errors type:

    pika exception                                   bridge error
    ───────────────────────────────────────────────  ──────────────────────────────────────
    AuthenticationError, ProbableAuthenticationError  AmqpAccessRefused (permanent)
    ProbableAccessDeniedError                         AmqpAccessRefused (permanent)
    ConnectionClosed* with a reply code               from_reply(code): see the table below
    other AMQPConnectionError (StreamLostError, …)    ConnectionLost
    ChannelClosed* with a reply code                  from_reply(code)
    UnroutableError, NackError                        MessageRejected
    anything else from pika                           ConnectionLost (the runtime reconnects)

AMQP reply codes (the broker's refusals) become typed errors, like nats.py's
`APIError.from_error()`:

    code  name                 error                        why
    ────  ───────────────────  ───────────────────────────  ──────────────────────────────────
    311   content-too-large    AmqpRefused (permanent)      this message will never fit
    312   no-route             MessageRejected              unroutable mandatory publish
    313   no-consumers         AmqpUnavailable (retryable)  a consumer may come back
    320   connection-forced    ConnectionLost               broker shutting down / restarting
    403   access-refused       AmqpAccessRefused            permissions do not change by retrying
    404   not-found            AmqpNotFound                 exchange or queue does not exist
    405   resource-locked      AmqpUnavailable              an exclusive owner may go away
    406   precondition-failed  AmqpPreconditionFailed       declared with other arguments, …
                                                            (but a consumer ack timeout is
                                                            AmqpUnavailable: redelivery fixes it)
    506   resource-error       AmqpUnavailable              broker out of a resource for now
    541   internal-error       AmqpUnavailable              broker-side failure, may pass
    other (501-540)            AmqpRefused                  protocol misuse: retrying cannot help
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pika import exceptions as pe

from natsbridge.bridge.errors import (
    BridgeError,
    ConnectionLost,
    MessageRejected,
    PermanentError,
    RetryableError,
)

CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
RESOURCE_ERROR = 506
INTERNAL_ERROR = 541


class AmqpRefused(PermanentError):
    """The broker refused an operation with an AMQP reply code; retrying cannot help."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        super().__init__(f"amqp: {reply_code} {reply_text}")


class AmqpNotFound(AmqpRefused, LookupError):
    """404: the exchange or queue does not exist."""


class AmqpAccessRefused(AmqpRefused):
    """403 or failed authentication: the user may not do this."""


class AmqpPreconditionFailed(AmqpRefused):
    """406: for example a queue declared with other arguments than the existing one."""


class AmqpUnavailable(RetryableError):
    """The broker refused for now (405, 506, 541, a consumer ack timeout…); try again."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        super().__init__(f"amqp: {reply_code} {reply_text}")


_PERMANENT_BY_CODE: dict[int, type[AmqpRefused]] = {
    ACCESS_REFUSED: AmqpAccessRefused,
    NOT_FOUND: AmqpNotFound,
    PRECONDITION_FAILED: AmqpPreconditionFailed,
}
_RETRYABLE_CODES = frozenset({NO_CONSUMERS, RESOURCE_LOCKED, RESOURCE_ERROR, INTERNAL_ERROR})


def from_reply(reply_code: int, reply_text: str) -> BridgeError:
    """The bridge error for a broker's channel.close or connection.close reply."""
    if reply_code == CONNECTION_FORCED:
        return ConnectionLost(f"amqp: {reply_code} {reply_text}")
    if reply_code == NO_ROUTE:
        return MessageRejected(f"amqp: {reply_code} {reply_text}")
    if reply_code in _RETRYABLE_CODES:
        return AmqpUnavailable(reply_code, reply_text)
    if reply_code == PRECONDITION_FAILED and "acknowledgement" in reply_text:
        # RabbitMQ's consumer_timeout: "delivery acknowledgement on channel 1 timed out".
        return AmqpUnavailable(reply_code, reply_text)
    if reply_code < 300:
        # 0 / 200: a normal close (by us, or by pika on a connection loss).
        return ConnectionLost(f"amqp: channel closed ({reply_code} {reply_text})")
    return _PERMANENT_BY_CODE.get(reply_code, AmqpRefused)(reply_code, reply_text)


def translate(exc: BaseException) -> BridgeError:
    """The bridge error for any exception pika raised or reported; bridge errors pass."""
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, pe.AuthenticationError | pe.ProbableAuthenticationError):
        error: BridgeError = AmqpAccessRefused(ACCESS_REFUSED, f"authentication failed: {exc}")
    elif isinstance(exc, pe.ProbableAccessDeniedError):
        error = AmqpAccessRefused(ACCESS_REFUSED, f"access to the virtual host refused: {exc}")
    elif isinstance(exc, pe.ConnectionClosedByBroker | pe.ChannelClosedByBroker):
        error = from_reply(exc.reply_code, exc.reply_text)
    elif isinstance(exc, pe.UnroutableError | pe.NackError):
        error = MessageRejected(f"amqp: {exc}")
    elif isinstance(exc, pe.AMQPConnectionError | pe.AMQPChannelError | OSError):
        error = ConnectionLost(f"amqp: {type(exc).__name__}: {_root_cause(exc)}".rstrip(": "))
    else:
        error = ConnectionLost(f"amqp: unexpected {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _root_cause(exc: BaseException) -> str:
    """What went wrong at the bottom of pika's wrappers, e.g. "[Errno 111] Connection refused".

    A failed connect reaches the connector as AMQPConnectionError(AMQPConnectionWorkflowFailed
    ([AMQPConnectorSocketConnectError(ConnectionRefusedError(...))])), whose str() is empty.
    """
    for _ in range(5):  # the wrappers nest three deep; never loop on a cycle
        if isinstance(exc, pe.AMQPConnectionError) and exc.args:
            inner = exc.args[0]  # AMQPConnectionError(<what failed>)
        elif getattr(exc, "exceptions", None):
            inner = exc.exceptions[-1]  # AMQPConnectionWorkflowFailed: every attempt's error
        else:
            inner = getattr(exc, "exception", None)  # AMQPConnector*Error(<the OSError>)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return str(exc)


@contextmanager
def translating() -> Iterator[None]:
    """Re-raise any pika exception in the block as its bridge error, `from` the original."""
    try:
        yield
    except BridgeError:
        raise
    except (pe.AMQPError, OSError) as exc:
        raise translate(exc) from exc
