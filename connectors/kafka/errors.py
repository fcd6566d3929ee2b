"""kafka-python's exceptions translated into the project's error tree, at the connector boundary.

Every kafka-python exception that reaches a connector method passes through `translate()`
and leaves as a bridge.errors type:

    kafka-python                                     natsbridge
    ───────────────────────────────────────────────  ────────────────────────────────────────
    SaslAuthenticationFailedError                    KafkaAuthenticationFailed  (permanent)
    AuthorizationError (topic, group, cluster, …)    KafkaNotAuthorized         (permanent)
    MessageSizeTooLargeError, RecordListTooLarge,    RecordTooLarge             (dead-letter)
    RecordTooLargeError (consumer)
    UnknownTopicOrPartitionError                     TopicMissing               (permanent)
    InvalidTopicError                                MappingError               (dead-letter)
    KafkaTimeoutError, RequestTimedOutError          BridgeTimeout              (retry)
    NoBrokersAvailable (2.x), KafkaConnectionError,  ConnectionLost             (retry)
    NotLeaderForPartitionError, NodeNotReadyError,
    every other RetriableError, IllegalStateError,
    the idempotent producer's sequence/epoch errors,
    OSError
    KafkaConfigurationError, UnsupportedCodecError   PermanentError             (fix the config)
    CorruptRecordError, InvalidRecordError,          MessageRejected            (dead-letter)
    InvalidTimestampError, other broker refusals
    anything else (CommitFailedError, …)             ConnectionLost             (reconnect)

Authentication failures deserve a note: kafka-python 3 retries a failed SASL handshake until
its bootstrap timeout and then reports only "Unable to bootstrap". `connectors.kafka.client`
keeps the failure the network client recorded and raises KafkaAuthenticationFailed instead.
A broker certificate that does not verify is kept the same way and becomes KafkaTlsFailed
(permanent); another failed TLS handshake becomes a ConnectionLost that says so.
Messages never hold the password: SASL errors come from the broker, and every message goes
through `bridge.secrets.redact` anyway.
"""

from __future__ import annotations

import kafka.errors as ke

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

try:  # the consumer's own error, not in kafka.errors
    from kafka.consumer.fetcher import RecordTooLargeError as _ConsumerRecordTooLarge
except ImportError:  # pragma: no cover - other kafka-python versions
    _ConsumerRecordTooLarge = ke.MessageSizeTooLargeError

# kafka-python 2.x raises NoBrokersAvailable from constructors; 3.x a KafkaTimeoutError.
_NO_BROKERS: type[BaseException] = getattr(ke, "NoBrokersAvailable", ke.KafkaConnectionError)

_PRODUCER_STATE = tuple(
    getattr(ke, name)
    for name in (
        "OutOfOrderSequenceNumberError",
        "UnknownProducerIdError",
        "InvalidProducerEpochError",
        "ProducerFencedError",
        "InvalidProducerIdMappingError",
    )
    if hasattr(ke, name)
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


def _text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(text)


def translate(exc: BaseException, *, size: int = 0, limit: int = 0) -> BridgeError:
    """The bridge error for anything kafka-python raised or reported; bridge errors pass.

    `size` and `limit` describe the record being produced, for a too-large error.
    """
    if isinstance(exc, BridgeError):
        return exc
    error: BridgeError
    if isinstance(exc, ke.SaslAuthenticationFailedError):
        error = KafkaAuthenticationFailed(f"kafka: authentication failed: {_text(exc)}")
    elif isinstance(exc, ke.AuthorizationError):
        error = KafkaNotAuthorized(f"kafka: not authorized: {_text(exc)}")
    elif isinstance(
        exc, ke.MessageSizeTooLargeError | ke.RecordListTooLargeError | _ConsumerRecordTooLarge
    ):
        error = RecordTooLarge(size, limit, _text(exc))
    elif isinstance(exc, ke.UnknownTopicOrPartitionError):
        error = PermanentError(f"kafka: unknown topic or partition: {_text(exc)}")
    elif isinstance(exc, ke.InvalidTopicError):
        error = MappingError(f"kafka: invalid topic: {_text(exc)}")
    elif isinstance(exc, ke.KafkaTimeoutError | ke.RequestTimedOutError):
        error = BridgeTimeout(f"kafka: {_text(exc)}")
    elif isinstance(exc, _PRODUCER_STATE):
        error = ConnectionLost(f"kafka: idempotent producer state lost: {_text(exc)}")
    elif isinstance(exc, ke.RetriableError | ke.IllegalStateError | _NO_BROKERS | OSError):
        error = ConnectionLost(f"kafka: {_text(exc)}")
    elif isinstance(exc, ke.KafkaConfigurationError | ke.UnsupportedCodecError):
        error = PermanentError(f"kafka: configuration: {_text(exc)}")
    elif isinstance(exc, ke.BrokerResponseError) and exc.retriable:
        error = ConnectionLost(f"kafka: {_text(exc)}")
    elif isinstance(exc, ke.BrokerResponseError):
        error = MessageRejected(f"kafka: {_text(exc)}")
    else:
        error = ConnectionLost(f"kafka: unexpected {type(exc).__name__}: {_text(exc)}")
    error.__cause__ = exc
    return error
