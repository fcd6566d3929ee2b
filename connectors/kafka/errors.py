"""librdkafka's errors (confluent-kafka) translated into the project's error tree.

Every KafkaError or KafkaException that reaches a connector method passes through
`translate()` and leaves as a bridge.errors type whose message names the broker's error
(``KafkaError.name()``, e.g. ``MSG_SIZE_TOO_LARGE``):

    librdkafka                                        natsbridge
    ────────────────────────────────────────────────  ─────────────────────────────────────
    _AUTHENTICATION, SASL_AUTHENTICATION_FAILED,      KafkaAuthenticationFailed (permanent)
    UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE
    _SSL (a certificate that does not verify)         KafkaTlsFailed            (permanent)
    *_AUTHORIZATION_FAILED                            KafkaNotAuthorized        (permanent)
    MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE,        RecordTooLarge            (dead-letter)
    INVALID_MSG_SIZE
    UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC/_PARTITION  PermanentError            (dead-letter)
    TOPIC_EXCEPTION (an invalid topic name)           MappingError              (dead-letter)
    INVALID_TIMESTAMP, INVALID_RECORD, CORRUPT_MESSAGE,
    INVALID_MSG, other non-retriable broker refusals  MessageRejected           (dead-letter)
    _TIMED_OUT, _MSG_TIMED_OUT, REQUEST_TIMED_OUT     BridgeTimeout             (retry)
    _UNSUPPORTED_FEATURE, UNSUPPORTED_VERSION,        PermanentError            (fix the cluster
    INVALID_CONFIG, _INVALID_ARG, _INVALID_TYPE,                                 or the config)
    INVALID_TRANSACTION_TIMEOUT
    a fatal error (fenced producer, lost sequence),   ConnectionLost            (a new client)
    every other local or retriable error

Messages never hold a password: every text goes through `bridge.secrets.redact`.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    MappingError,
    MessageRejected,
    PayloadTooLarge,
    PermanentError,
)
from natsbridge.bridge.secrets import redact

_AUTHENTICATION = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)
_AUTHORIZATION = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)
_UNKNOWN_TOPIC = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)
_TIMEOUT = frozenset(
    {KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT}
)
_REFUSED_RECORD = frozenset(
    {
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    }
)
_CONFIGURATION = frozenset(
    {
        KafkaError._UNSUPPORTED_FEATURE,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.INVALID_CONFIG,
        KafkaError._INVALID_ARG,
        KafkaError._INVALID_TYPE,
        KafkaError.INVALID_TRANSACTION_TIMEOUT,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
    }
)


class KafkaAuthenticationFailed(PermanentError):
    """The broker refused the SASL credentials (wrong user or password, or mechanism)."""


class KafkaTlsFailed(PermanentError):
    """The broker's TLS certificate did not verify (not signed by a trusted CA, wrong host)."""


class KafkaNotAuthorized(PermanentError):
    """The authenticated user may not do this (a Kafka ACL refused it)."""


class TopicMissing(PermanentError, LookupError):
    """The Kafka topic does not exist and the route does not create it."""

    def __init__(self, topic: str, detail: str) -> None:
        self.topic = topic
        super().__init__(f"kafka: topic {topic!r} does not exist; {detail}")


class RecordTooLarge(PayloadTooLarge):
    """The record is larger than the producer's or the broker's limit."""

    def __init__(self, size: int, limit: int, detail: str) -> None:
        super().__init__(size, limit)
        self.args = (f"kafka: record of about {size} bytes is too large: {detail}",)


def describe(error: KafkaError) -> str:
    """``NAME: text`` of a librdkafka error, secrets redacted."""
    text = error.str() or ""
    return redact(f"{error.name()}: {text}" if text else str(error.name()))


def error_of(exc: BaseException) -> KafkaError | None:
    """The KafkaError inside a KafkaException (or `exc` itself), if any."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def translate(exc: BaseException | KafkaError, *, size: int = 0, limit: int = 0) -> BridgeError:
    """The bridge error for anything confluent-kafka raised or reported; bridge errors pass.

    `size` and `limit` describe the record being produced, for a too-large error.
    """
    if isinstance(exc, BridgeError):
        return exc
    error = error_of(exc) if isinstance(exc, BaseException) else exc
    if error is None:
        assert isinstance(exc, BaseException)
        text = redact(str(exc) or type(exc).__name__)
        if isinstance(exc, OSError):
            return ConnectionLost(f"kafka: {text}")
        return ConnectionLost(f"kafka: unexpected {type(exc).__name__}: {text}")
    return _from_error(error, size, limit)


def _from_error(error: KafkaError, size: int, limit: int) -> BridgeError:
    code, text = error.code(), describe(error)
    if code in _AUTHENTICATION:
        return KafkaAuthenticationFailed(f"kafka: authentication failed: {text}")
    if code == KafkaError._SSL and "verify" in text:
        return KafkaTlsFailed(f"kafka: the broker's TLS certificate was not accepted: {text}")
    if code in _AUTHORIZATION:
        return KafkaNotAuthorized(f"kafka: not authorized: {text}")
    if code in _TOO_LARGE:
        return RecordTooLarge(size, limit, text)
    if code in _UNKNOWN_TOPIC:
        return PermanentError(f"kafka: unknown topic or partition: {text}")
    if code == KafkaError.TOPIC_EXCEPTION:
        return MappingError(f"kafka: invalid topic: {text}")
    if code in _REFUSED_RECORD:
        return MessageRejected(f"kafka: the broker refused the record: {text}")
    if code in _TIMEOUT:
        return BridgeTimeout(f"kafka: {text}")
    if code in _CONFIGURATION:
        return PermanentError(f"kafka: the cluster or the configuration cannot do this: {text}")
    if error.fatal():
        return ConnectionLost(f"kafka: fatal client error, a new client is needed: {text}")
    if code >= 0 and not error.retriable():
        return MessageRejected(f"kafka: {text}")
    return ConnectionLost(f"kafka: {text}")
