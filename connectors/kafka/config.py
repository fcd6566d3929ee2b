"""The Apache Kafka connector's config: its connection, `from:` and `to:` models.

Validated by the core's config loader, which asks the kind (connectors/kafka/kind.py) which
model a route endpoint of this kind takes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from natsbridge.bridge.config.model import Endpoint, Model, Template, Tls

TRANSACTIONS_NEED = (
    "exactly_once into Kafka needs Kafka transactions: brokers of Kafka 2.5 or later, "
    "transaction.state.log.replication.factor and transaction.state.log.min.isr that the "
    "cluster's brokers can meet, and (with ACLs) WRITE and DESCRIBE on the TransactionalId "
    "'<bridge id>.<route>'"
)
"""What `natsbridge validate` and a failed init_transactions say such a route needs."""

OWNED_PROPERTIES: dict[str, str] = {
    "bootstrap.servers": "use bootstrap_servers",
    "metadata.broker.list": "use bootstrap_servers",
    "client.id": "use client_id",
    "security.protocol": "use security_protocol",
    "sasl.mechanism": "use sasl_mechanism",
    "sasl.mechanisms": "use sasl_mechanism",
    "sasl.username": "use sasl_username",
    "sasl.password": "use sasl_password",
    "ssl.ca.location": "use tls.ca_file",
    "ssl.certificate.location": "use tls.cert_file",
    "ssl.key.location": "use tls.key_file",
    "enable.ssl.certificate.verification": "use tls.verify",
    "ssl.endpoint.identification.algorithm": "use tls.verify",
    "group.id": "use from.group_id",
    "auto.offset.reset": "use from.auto_offset_reset",
    "enable.auto.commit": "offsets are committed once durable in the buffer",
    "enable.auto.offset.store": "offsets are committed once durable in the buffer",
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": "the source reads on",
    "acks": "acks=all",
    "request.required.acks": "acks=all",
    "enable.idempotence": "the producer is idempotent",
    "transactional.id": "derived from bridge id and route under exactly_once",
    "compression.type": "use to.compression",
    "compression.codec": "use to.compression",
    "message.max.bytes": "derived from the route's max_payload",
    "error_cb": "the connector's error handling",
    "logger": "logs go to natsbridge.kafka.librdkafka",
    "on_commit": "the source's commit watermark",
    "on_delivery": "the sink's delivery reports",
    "dr_cb": "the sink's delivery reports",
    "dr_msg_cb": "the sink's delivery reports",
}
"""librdkafka properties the `librdkafka:` map may not set, and why (what to use instead)."""


def owned_by(key: str) -> str | None:
    """Why natsbridge owns the librdkafka property `key`, or None if the map may set it."""
    return OWNED_PROPERTIES.get(key.strip().lower())


class KafkaConnection(Model):
    """An Apache Kafka cluster."""

    kind: Literal["kafka"]
    bootstrap_servers: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    client_id: str = "natsbridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    tls: Tls | None = None
    librdkafka: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="More librdkafka properties (https://docs.confluent.io/platform/current/"
        "clients/librdkafka/html/md_CONFIGURATION.html), except those natsbridge sets",
    )

    @field_validator("librdkafka")
    @classmethod
    def _not_ours(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for key in value:
            owner = owned_by(key)
            if owner is not None:
                raise ValueError(f"librdkafka: {key!r} is set by natsbridge ({owner}); remove it")
        return value

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaConnection:
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if not uses_sasl and self.sasl_mechanism:
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if self.tls is not None and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"tls needs security_protocol SSL or SASL_SSL, not {self.security_protocol}"
            )
        return self


class KafkaSource(Endpoint):
    """Consume Kafka topics through a consumer group."""

    topics: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]] | None = None
    topic_pattern: str | None = Field(None, description="Regular expression of topic names")
    group_id: str | None = Field(None, description="Default: natsbridge-<route>")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    @model_validator(mode="after")
    def _topics_or_pattern(self) -> KafkaSource:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("a kafka source needs exactly one of 'topics' or 'topic_pattern'")
        return self


class KafkaTopicCreation(Model):
    """How to create a missing Kafka topic; the keys set are compared with an existing one."""

    partitions: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)


class KafkaSink(Endpoint):
    """Produce to Kafka with acks=all."""

    topic: Template
    key: Template | None = None
    partition: int | None = Field(None, ge=0, description="Default: Kafka's partitioner by key")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create: bool = Field(True, description="Create a missing topic (as create_topic says)")
    create_topic: KafkaTopicCreation | None = Field(
        None, description="Default: 1 partition, replication factor 1"
    )

    @model_validator(mode="after")
    def _create_topic_needs_create(self) -> KafkaSink:
        if self.create_topic is not None and not self.create:
            raise ValueError("create_topic needs create: true (or remove create_topic)")
        return self

    @property
    def topic_creation(self) -> KafkaTopicCreation | None:
        """How a missing topic is created, or None when the route must not create it."""
        if not self.create:
            return None
        return self.create_topic or KafkaTopicCreation()
