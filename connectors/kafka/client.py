"""kafka-python clients built from a KafkaConnection: options, TLS, SASL, admin helpers.

Every consumer, producer and admin client of this connector is made by `build()`, which

* derives the options from the connection (bootstrap servers, client id, security
  protocol, TLS context, SASL PLAIN / SCRAM credentials: the password only through
  `.get_secret_value()`, never in a log line or an error);
* hands kafka-python a network-client factory that remembers the network client it
  made. kafka-python 3 starts that client's I/O thread before it bootstraps, and when
  the bootstrap fails (broker down, wrong password, untrusted certificate) the
  constructor raises a bare "Unable to bootstrap" and leaves the thread running. The
  factory lets `build()` close it, and read the SASL or TLS failure the network client
  recorded, so that a wrong password is a clear, permanent KafkaAuthenticationFailed and
  a broker certificate the CA does not vouch for a permanent KafkaTlsFailed, rather than
  an endless retry.

Blocking: every function here blocks; callers run them on their own thread.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kafka
import kafka.codec
import kafka.errors as ke
from kafka import KafkaAdminClient

from natsbridge.bridge.errors import ConnectionLost, PermanentError, RetryableError
from natsbridge.bridge.secrets import redact, register
from natsbridge.bridge.tls import tls_context
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaTopicCreation
from natsbridge.connectors.kafka.driver import NetClients
from natsbridge.connectors.kafka.errors import KafkaAuthenticationFailed, KafkaTlsFailed, translate

try:
    from kafka.record import util as _record_util

    HAVE_C_CRC32C = getattr(_record_util, "crc32c_c", None) is not None
except ImportError:  # pragma: no cover
    HAVE_C_CRC32C = False
"""Whether kafka-python found the `crc32c` C extension (else it checksums in pure Python)."""

log = logging.getLogger("natsbridge.kafka")

DEFAULT_BOOTSTRAP_TIMEOUT_MS = 10_000
"""How long a client may try to reach a bootstrap server when it starts, in milliseconds."""
DEFAULT_ADMIN_TIMEOUT_MS = 15_000
"""How long a topic creation may take, in milliseconds."""
UNKNOWN_TOPIC_OR_PARTITION = 3
"""Kafka's error code for a topic that does not exist."""

_CODECS: dict[str, tuple[Callable[[], bool], str]] = {
    "gzip": (kafka.codec.has_gzip, "(built in)"),
    "snappy": (kafka.codec.has_snappy, "python-snappy"),
    "lz4": (kafka.codec.has_lz4, "lz4"),
    "zstd": (kafka.codec.has_zstd, "zstandard"),
}

T = TypeVar("T")


class _RedactSecrets(logging.Filter):
    """Hides registered secrets in records of kafka-python loggers that print configurations."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, ()
        return True


# KafkaAdminClient logs its whole configuration, SASL password included, at DEBUG level.
for _name in ("kafka.admin.client", "kafka.producer.kafka", "kafka.consumer.group"):
    logging.getLogger(_name).addFilter(_RedactSecrets())


def describe(config: KafkaConnection) -> str:
    """The bootstrap servers, for messages (they carry no credentials)."""
    return ",".join(config.bootstrap_servers)


def client_options(
    config: KafkaConnection, overrides: Mapping[str, Any] | None = None, **own: Any
) -> dict[str, Any]:
    """The options every kafka-python client of `config` shares, plus `own`, then `overrides`."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
        "bootstrap_timeout_ms": DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        # kafka-python uses this context as it is (its ssl_cafile, ssl_certfile,
        # ssl_keyfile and ssl_check_hostname options only build one when none is given).
        options["ssl_context"] = tls_context(config.tls, "kafka")
    if config.sasl_mechanism is not None:
        assert config.sasl_password is not None  # the model checks that SASL is complete
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        password = config.sasl_password.get_secret_value()
        register(password)  # redacted from every message and log line from now on
        options["sasl_plain_password"] = password
    options.update(own)
    options.update(overrides or {})
    return options


def tls_error(config: KafkaConnection, exc: ssl.SSLError) -> PermanentError | ConnectionLost:
    """The error for a failed TLS handshake with the brokers of `config`.

    A certificate that does not verify is permanent (the CA or the broker's certificate
    must change); another handshake failure (e.g. a listener that does not speak TLS) is
    retried, but says what happened.
    """
    where = f"kafka: {describe(config)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = f"tls.ca_file {config.tls.ca_file!r}" if config.tls and config.tls.ca_file else None
        trusted = ca or "the system's CA certificates (no tls.ca_file)"
        return KafkaTlsFailed(
            f"{where}: the broker's TLS certificate was not accepted: "
            f"{exc.verify_message or exc.reason}; it must be signed by a CA in {trusted} "
            "and name the host in bootstrap_servers"
        )
    return ConnectionLost(
        f"{where}: TLS handshake failed: {exc.reason or exc}; "
        f"does this listener speak {config.security_protocol}?"
    )


def check_compression(compression: str) -> str | None:
    """kafka-python's compression_type for the config value; PermanentError if unavailable."""
    if compression == "none":
        return None
    available, package = _CODECS[compression]
    if not available():
        raise PermanentError(
            f"kafka: compression {compression!r} needs the Python package {package!r} "
            f"(pip install {package})"
        )
    return compression


def build(make: Callable[..., T], options: dict[str, Any], config: KafkaConnection) -> T:
    """`make(**options)` (a KafkaConsumer, KafkaProducer or KafkaAdminClient), errors translated."""
    clients = NetClients(sasl=config.sasl_mechanism is not None)
    try:
        made = make(kafka_client=clients, **options)
        clients.watching = False
        return made
    except BaseException as exc:
        failure = clients.auth_failure()
        tls_failure = clients.tls_failure()
        clients.close()  # the constructor failed: nobody else will stop its I/O thread
        if failure is not None:
            raise KafkaAuthenticationFailed(
                f"kafka: {describe(config)}: authentication failed for user "
                f"{config.sasl_username!r} ({config.sasl_mechanism}): {redact(str(failure))}"
            ) from None
        if tls_failure is not None:
            raise tls_error(config, tls_failure) from None
        error = translate(exc)
        if isinstance(error, RetryableError):  # say where it could not connect
            error = type(error)(f"{error} (bootstrap servers {describe(config)})")
        raise error from exc


def admin(config: KafkaConnection) -> KafkaAdminClient:
    """A KafkaAdminClient for `config` (blocking)."""
    return build(KafkaAdminClient, client_options(config), config)


def partition_count(client: KafkaAdminClient, topic: str) -> int | None:
    """How many partitions `topic` has, or None when it does not exist (never creates it)."""
    try:
        [described] = client.describe_topics([topic])
    except Exception as exc:
        raise translate(exc) from exc
    code = described.get("error_code", 0)
    if code == UNKNOWN_TOPIC_OR_PARTITION:
        return None
    if code:
        raise translate(ke.for_code(code)(f"describing topic {topic!r}"))
    return len(described.get("partitions") or ())


def max_message_bytes(client: KafkaAdminClient, topic: str) -> int | None:
    """The topic's ``max.message.bytes`` (its own or the broker default), or None if unknown."""
    from kafka.admin import ConfigResource, ConfigResourceType

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=["max.message.bytes"])
    try:
        described = client.describe_configs([resource])
        value = described["topic"][topic]["max.message.bytes"]["value"]
        return int(value)
    except Exception as exc:  # an old broker or a missing permission: rely on the broker
        log.debug("kafka: cannot read max.message.bytes of %r: %s", topic, exc)
        return None


def create_topic(client: KafkaAdminClient, topic: str, creation: KafkaTopicCreation) -> bool:
    """Create `topic` as `creation` says; False if it existed already. Waits until it is usable."""
    spec = {
        topic: {
            "num_partitions": creation.partitions,
            "replication_factor": creation.replication_factor,
        }
    }
    try:
        client.create_topics(spec, timeout_ms=DEFAULT_ADMIN_TIMEOUT_MS)
    except ke.TopicAlreadyExistsError:
        return False
    except Exception as exc:
        raise translate(exc) from exc
    try:
        client.wait_for_topics([topic], timeout_ms=DEFAULT_ADMIN_TIMEOUT_MS)
    except Exception as exc:
        raise translate(exc) from exc
    log.info(
        "kafka: created topic %r (%d partitions, replication factor %d)",
        topic,
        creation.partitions,
        creation.replication_factor,
    )
    return True
