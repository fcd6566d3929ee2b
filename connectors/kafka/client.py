"""confluent-kafka clients built from a KafkaConnection: settings, TLS, SASL, logs, admin helpers.

Every consumer, producer and admin client of this connector gets its settings from
`settings()`:

* the connection's keys as librdkafka properties (bootstrap servers, client id, security
  protocol, TLS files, SASL mechanism and credentials: the password only through
  `.get_secret_value()`, registered for redaction, never in a log line or an error);
* then the connection's ``librdkafka:`` pass-through map (config.py refuses the keys
  natsbridge owns), then the caller's own keys (which win).

librdkafka's log lines go to the logger ``natsbridge.kafka.librdkafka`` (its errors as
warnings, at most once a minute each, the rest at DEBUG), secrets redacted. Its
error callback feeds a `ClientErrors`, which tells why a client could not reach the
cluster: a refused SASL login is a permanent KafkaAuthenticationFailed naming the user,
a broker certificate the CA does not vouch for a permanent KafkaTlsFailed naming the CA
file, anything else a retryable ConnectionLost naming the bootstrap servers.

Blocking: every function here blocks; callers run them on their own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from natsbridge.bridge.declare import Declaration, log_created
from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError
from natsbridge.bridge.secrets import redact, register
from natsbridge.bridge.tls import tls_context
from natsbridge.connectors.kafka.config import KafkaConnection
from natsbridge.connectors.kafka.errors import (
    KafkaAuthenticationFailed,
    KafkaTlsFailed,
    describe,
    error_of,
    translate,
)

log = logging.getLogger("natsbridge.kafka")
librdkafka_log = logging.getLogger("natsbridge.kafka.librdkafka")
LIBRDKAFKA_DEBUG = "broker,security"  # librdkafka's debug contexts under --driver-logs

CONNECT_TIMEOUT_S = 10.0
"""How long a client may try to reach the cluster when it starts."""
ADMIN_TIMEOUT_S = 15.0
"""How long a topic creation or a config lookup may take."""
REPEAT_AFTER_S = 60.0
"""How long the same librdkafka warning is logged at DEBUG only after it was logged."""
_NUMBERS = re.compile(r"\d+")


class _LibrdkafkaLog:
    """The `logger` librdkafka writes to: natsbridge.kafka.librdkafka, secrets redacted.

    librdkafka logs a failed connection attempt as an error each time it retries (tens a
    second while a broker is down): its errors become warnings, once a minute for the
    same text (numbers aside); the repeats and everything below warning go to DEBUG.
    """

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def log(self, level: int, message: str, *args: Any) -> None:
        text = redact(message % args if args else message)
        if level >= logging.WARNING:
            shape = _NUMBERS.sub("#", text)
            now = time.monotonic()
            with self.lock:
                if now - self.seen.get(shape, -REPEAT_AFTER_S) >= REPEAT_AFTER_S:
                    if len(self.seen) > 1000:
                        self.seen.clear()
                    self.seen[shape] = now
                    librdkafka_log.warning("%s", text)
                    return
        librdkafka_log.debug("%s", text)


LIBRDKAFKA_LOG = _LibrdkafkaLog()


class ClientErrors:
    """The errors librdkafka reported through `error_cb`; the first SASL and TLS ones kept."""

    def __init__(self) -> None:
        self.authentication: KafkaError | None = None
        self.tls: KafkaError | None = None
        self.last: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._AUTHENTICATION and self.authentication is None:
            self.authentication = error
        elif code == KafkaError._SSL and self.tls is None:
            self.tls = error
        self.last = error
        librdkafka_log.debug("error: %s", describe(error))

    def why_unreachable(self, config: KafkaConnection, cause: BaseException) -> BridgeError:
        """The error for a client that could not reach the cluster of `config`."""
        where = f"kafka: {bootstrap(config)}"
        if self.authentication is not None:
            return KafkaAuthenticationFailed(
                f"{where}: authentication failed for user {config.sasl_username!r} "
                f"({config.sasl_mechanism}): {describe(self.authentication)}"
            )
        if self.tls is not None:
            text = describe(self.tls)
            if "verify" not in text:
                return ConnectionLost(
                    f"{where}: TLS handshake failed: {text}; "
                    f"does this listener speak {config.security_protocol}?"
                )
            ca = (
                f"tls.ca_file {config.tls.ca_file!r}" if config.tls and config.tls.ca_file else None
            )
            trusted = ca or "the system's CA certificates (no tls.ca_file)"
            return KafkaTlsFailed(
                f"{where}: the broker's TLS certificate was not accepted: {text}; it must be "
                f"signed by a CA in {trusted} and name the host in bootstrap_servers"
            )
        error = translate(cause)
        if isinstance(error, ConnectionLost | PermanentError) and self.last is not None:
            error = type(error)(f"{error} ({describe(self.last)})")
        return type(error)(f"{error} (bootstrap servers {bootstrap(config)})")


def bootstrap(config: KafkaConnection) -> str:
    """The bootstrap servers, for messages (they carry no credentials)."""
    return ",".join(config.bootstrap_servers)


def settings(config: KafkaConnection, errors: ClientErrors, **own: Any) -> dict[str, Any]:
    """The librdkafka settings of a client of `config`: connection, pass-through, then `own`."""
    options: dict[str, Any] = {
        "bootstrap.servers": bootstrap(config),
        "client.id": config.client_id,
        "security.protocol": config.security_protocol.lower(),
        "logger": LIBRDKAFKA_LOG,
        "error_cb": errors,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        tls = config.tls
        tls_context(tls, "kafka")  # the same file checks and messages as every connector
        if tls is not None:
            if tls.ca_file:
                options["ssl.ca.location"] = tls.ca_file
            if tls.cert_file:
                options["ssl.certificate.location"] = tls.cert_file
                options["ssl.key.location"] = tls.key_file or tls.cert_file
            if not tls.verify:
                options["enable.ssl.certificate.verification"] = False
                options["ssl.endpoint.identification.algorithm"] = "none"
        if options.get("enable.ssl.certificate.verification", True):
            options["ssl.endpoint.identification.algorithm"] = "https"
    if librdkafka_log.isEnabledFor(logging.DEBUG):  # --log-level debug --driver-logs
        options["debug"] = LIBRDKAFKA_DEBUG
    if config.sasl_mechanism is not None:
        assert config.sasl_password is not None  # the model checks that SASL is complete
        password = config.sasl_password.get_secret_value()
        register(password)  # redacted from every message and log line from now on
        options["sasl.mechanism"] = config.sasl_mechanism
        options["sasl.username"] = config.sasl_username
        options["sasl.password"] = password
    options.update(config.librdkafka)
    options.update(own)
    return options


def reach(client: Any, errors: ClientErrors, config: KafkaConnection) -> Any:
    """The cluster's metadata through `client`; the clear error when it cannot be reached."""
    try:
        return client.list_topics(timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        serve = getattr(client, "poll", None)
        if serve is not None:
            serve(0)  # error_cb runs in poll(): it knows whether SASL or TLS failed
        raise errors.why_unreachable(config, exc) from None


def admin(config: KafkaConnection) -> AdminClient:
    """An AdminClient for `config` that reached the cluster (blocking)."""
    errors = ClientErrors()
    try:
        # (an AdminClient asks for metadata as a producer, auto-creating topics by default)
        client = AdminClient(settings(config, errors, **{"allow.auto.create.topics": False}))
    except KafkaException as exc:
        raise PermanentError(f"kafka: configuration: {translate(exc)}") from None
    reach(client, errors, config)
    return client


def partition_count(client: Any, topic: str) -> int | None:
    """How many partitions `topic` has, or None when it does not exist (never creates it)."""
    try:
        metadata = client.list_topics(topic, timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        raise translate(exc) from exc
    described = metadata.topics.get(topic)
    if described is None:
        return None
    error = described.error
    if error is not None:
        if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            return None
        raise translate(error)
    return len(described.partitions)


def max_message_bytes(client: AdminClient, topic: str) -> int | None:
    """The topic's ``max.message.bytes`` (its own or the broker default), or None if unknown."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        [future] = client.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S).values()
        entry = future.result(timeout=ADMIN_TIMEOUT_S).get("max.message.bytes")
        return int(entry.value) if entry is not None and entry.value is not None else None
    except Exception as exc:  # an old broker or a missing permission: rely on the broker
        log.debug("kafka: cannot read max.message.bytes of %r: %s", topic, exc)
        return None


def create_topic(client: AdminClient, declaration: Declaration) -> bool:
    """Create the declared topic with its partitions and replication factor; False if it
    existed already. Waits until it is usable; a topic created here is logged once."""
    settings = declaration.settings
    spec = NewTopic(
        declaration.name,
        int(settings["partitions"]),  # type: ignore[call-overload]
        int(settings["replication_factor"]),  # type: ignore[call-overload]
    )
    [future] = client.create_topics([spec], request_timeout=ADMIN_TIMEOUT_S).values()
    try:
        future.result(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        error = error_of(exc)
        if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise translate(exc) from exc
    log_created(declaration)
    return True
