"""The Apache Kafka connector's config: its connection, `from:` and `to:` models.

Validated by the core's config loader, which asks the kind (connectors/kafka/kind.py) which
model a route endpoint of this kind takes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from natsbridge.bridge.config.model import Endpoint, Model, Template, Tls


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
    """How to create a missing Kafka topic."""

    partitions: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)


class KafkaSink(Endpoint):
    """Produce to Kafka with acks=all."""

    topic: Template
    key: Template | None = None
    partition: int | None = Field(None, ge=0, description="Default: Kafka's partitioner by key")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create_topic: KafkaTopicCreation | None = None
