"""nats-py exceptions translated into the project's error tree, at the connector boundary.

    nats-py                                         natsbridge
    ConnectionClosedError, NoServersError,          ConnectionLost          (retry)
    StaleConnectionError, UnexpectedEOF,
    OutboundBufferLimitError, ConnectionReconnecting/DrainingError, OSError
    TimeoutError, FlushTimeoutError                 BridgeTimeout           (retry)
    NoRespondersError, NoStreamResponseError        NoResponders            (retry, see below)
    AuthorizationError, Secure*Error                PermanentError          (fix the config)
    BadHeaderError                                  HeaderError             (dead-letter)
    BadSubjectError                                 SubjectError            (dead-letter)
    MaxPayloadError                                 PayloadTooLarge         (dead-letter)
    JetStream APIError                              by err_code: `api_error()`

No responders is retryable: it says that nobody listens on the subject *now* (a service
restarting, a JetStream stream leader election, JetStream itself starting up). A subject
that no stream captures is caught before publishing by the JetStream sink and rejected
for good (MessageRejected) instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    HeaderError,
    MessageRejected,
    PermanentError,
    RetryableError,
    SubjectError,
)


class NoResponders(RetryableError):
    """Nobody listens on the subject of a request (or no stream answered a JetStream publish)."""


class StreamMissing(PermanentError):
    """A JetStream stream or consumer the route binds to does not exist and may not be created."""


# JetStream API err_codes (nats-server's errors.json) that retrying can fix.
RETRYABLE_JS_CODES = frozenset(
    {
        10008,  # JetStream system temporarily unavailable
        10009,  # cluster can not handle request (not leader)
        10023,  # insufficient resources
        10028,  # insufficient memory resources
        10047,  # insufficient storage resources
        10077,  # storing the message failed (stream limits with discard new, e.g. maximum messages)
        10118,  # stream is offline
        10158,  # duplicate message id is in process
        10167,  # too many requests
    }
)
# ... and those that mean "this message, as it is, can never be stored".
REFUSED_JS_CODES = frozenset(
    {
        10054,  # message size exceeds maximum allowed
        10111,  # rollup not permitted: a 500, but the same headers are refused every time
    }
)
NOT_FOUND_JS_CODES = frozenset({10059, 10014})  # stream not found, consumer not found

_CONNECTION_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    OSError,
)
_REFUSED_ERRORS = (
    nats.errors.AuthorizationError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.SecureConnFailedError,
    nats.errors.InvalidUserCredentialsError,
)


def api_error(exc: nats.js.errors.APIError, context: str) -> BridgeError:
    """The project's error for a JetStream API error reply."""
    text = f"{context}: {exc.description or 'JetStream error'} (err_code {exc.err_code})"
    code = exc.err_code
    if code in RETRYABLE_JS_CODES:
        return RetryableError(text)
    if code in REFUSED_JS_CODES:
        return MessageRejected(text)
    if code in NOT_FOUND_JS_CODES:
        return StreamMissing(text)
    if isinstance(exc, nats.js.errors.ServiceUnavailableError) or (exc.code or 0) >= 500:
        return RetryableError(text)
    return MessageRejected(text)


def translate_exception(exc: BaseException, context: str) -> BaseException:
    """The project's error for a nats-py exception (other exceptions are returned as they are)."""
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return api_error(exc, context)
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return NoResponders(f"{context}: no responders")
    if isinstance(exc, nats.errors.BadHeaderError):
        return HeaderError(f"{context}: {exc}")
    if isinstance(exc, nats.errors.BadSubjectError):
        return SubjectError(f"{context}: invalid subject")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return MessageRejected(f"{context}: {exc}")
    if isinstance(exc, _REFUSED_ERRORS):
        return PermanentError(f"{context}: {exc}")
    if isinstance(exc, TimeoutError):  # nats-py's TimeoutError derives from it
        return BridgeTimeout(f"{context}: timed out")
    if isinstance(exc, _CONNECTION_ERRORS):
        return ConnectionLost(f"{context}: {exc or type(exc).__name__}")
    if isinstance(exc, nats.errors.Error):
        text = str(exc)
        if "authorization" in text.lower() or "permissions" in text.lower():
            return PermanentError(f"{context}: {text}")
        return ConnectionLost(f"{context}: {text}")
    return exc


@contextmanager
def translate(context: str) -> Iterator[None]:
    """Re-raise nats-py exceptions inside the block as the project's own, `from` the original."""
    try:
        yield
    except BridgeError:
        raise
    except Exception as exc:
        translated = translate_exception(exc, context)
        if translated is exc:
            raise
        raise translated from exc
