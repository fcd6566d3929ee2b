"""The Kafka connector over TLS (security_protocol SSL), against the harness Kafka's SSL listener.

services.sh gives its Kafka an SSL listener with a server certificate for 127.0.0.1 signed
by a CA it made once; `services.sh env` prints the listener and that CA file. The round
trip goes through the bridge's own sink and source (and the sink's admin client, which
creates the topic); a CA that did not sign the broker's certificate must be a clear,
permanent error, not kafka-python's "Unable to bootstrap" after an endless retry.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from natsbridge.bridge.connector import send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError, ConfigError, PermanentError
from natsbridge.connectors.kafka.errors import KafkaTlsFailed
from tests.conftest import HINT, in_ci
from tests.connectors.amqp_helpers import make_tls_files
from tests.connectors.helpers import receive_n, run, unique
from tests.connectors.test_kafka import ack_all, load_route, sink_for, source_for


@dataclass(frozen=True)
class KafkaTls:
    """A Kafka SSL listener and the CA file that signed its certificate."""

    bootstrap: str
    ca_file: str


@pytest.fixture(scope="session")
def kafka_tls() -> KafkaTls:
    """The SSL listener of the services.sh Kafka (no testcontainers fallback)."""
    bootstrap = os.environ.get("NATSBRIDGE_KAFKA_TLS_BOOTSTRAP", "").strip()
    ca_file = os.environ.get("NATSBRIDGE_KAFKA_TLS_CA_FILE", "").strip()
    if not (bootstrap and ca_file):
        message = (
            f"NATSBRIDGE_KAFKA_TLS_BOOTSTRAP or NATSBRIDGE_KAFKA_TLS_CA_FILE is not set: {HINT}"
        )
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    if not Path(ca_file).is_file():
        pytest.fail(
            f"{ca_file} does not exist: restart Kafka with a current services.sh "
            "(`bash deploy/dev/services.sh restart kafka`) to make its TLS certificates",
            pytrace=False,
        )
    return KafkaTls(bootstrap=bootstrap, ca_file=ca_file)


def ssl_connection(ca_file: str | Path) -> dict[str, object]:
    """The `connections.kafka` keys of a TLS connection trusting `ca_file`."""
    return {"security_protocol": "SSL", "tls": {"ca_file": str(ca_file)}}


@pytest.mark.kafka
def test_sink_and_source_over_tls(kafka_tls: KafkaTls, tmp_path: Path) -> None:
    """Payload, key and repeated headers go out through the sink and back through the source."""

    async def scenario() -> None:
        kafka = ssl_connection(kafka_tls.ca_file)
        topic = unique("tls")
        sink = sink_for(
            tmp_path, kafka_tls.bootstrap, kafka, topic=topic, create_topic={"partitions": 1}
        )
        sent = [
            Envelope(
                subject=topic,
                payload=f"over tls {i}".encode() + b"\x00\xff",
                key=f"key-{i}".encode(),
                headers={"X-Trace": [f"t{i}", "again"], "X-Empty": [""]},
            )
            for i in range(20)
        ]
        await sink.connect()  # creates the topic through the admin client, over TLS too
        try:
            await asyncio.gather(*(send_one(sink, envelope) for envelope in sent))
        finally:
            await sink.close()
        source = source_for(tmp_path, kafka_tls.bootstrap, f"g-{topic}", kafka, topics=[topic])
        await source.connect()
        try:
            received = await receive_n(source, len(sent))
            got = [m.envelope for m in received]
            assert [e.payload for e in got] == [e.payload for e in sent]
            assert [e.key for e in got] == [e.key for e in sent]
            for envelope, original in zip(got, sent, strict=True):
                assert envelope.subject == topic
                assert envelope.headers["X-Trace"] == original.headers["X-Trace"]
                assert envelope.headers["X-Empty"] == [""]
            ack_all(received)
        finally:
            await source.close()

    run(scenario())


@pytest.mark.kafka
def test_a_ca_that_did_not_sign_the_broker_is_a_clear_permanent_error(
    kafka_tls: KafkaTls, tmp_path: Path
) -> None:
    """Sink and source both refuse the broker, naming the CA file, within the bootstrap timeout."""
    wrong_ca, _, _ = make_tls_files(tmp_path)  # a fresh CA that signed nothing of Kafka's
    kafka = ssl_connection(wrong_ca)
    sink = sink_for(tmp_path, kafka_tls.bootstrap, kafka, topic=unique("tls-wrong-ca"))
    source = source_for(tmp_path, kafka_tls.bootstrap, unique("g"), kafka, topics=["any"])

    async def scenario() -> list[BaseException | None]:
        results = await asyncio.gather(sink.connect(), source.connect(), return_exceptions=True)
        await asyncio.gather(sink.close(), source.close())
        return list(results)

    for failure in run(scenario()):
        assert isinstance(failure, KafkaTlsFailed), repr(failure)
        assert isinstance(failure, PermanentError) and isinstance(failure, BridgeError)
        message = str(failure)
        assert "certificate was not accepted" in message, message
        assert str(wrong_ca) in message and kafka_tls.bootstrap in message, message


def test_missing_ca_file_is_a_permanent_error_naming_it(tmp_path: Path) -> None:
    """Checked before any connection: no broker is needed."""
    missing = tmp_path / "no-such-ca.pem"
    sink = sink_for(tmp_path, "127.0.0.1:1", ssl_connection(missing), topic="t")
    with pytest.raises(PermanentError, match=re.escape(f"tls.ca_file '{missing}' does not exist")):
        run(sink.connect())
    run(sink.close())


@pytest.mark.parametrize(
    ("kafka", "problem"),
    [
        (
            {"security_protocol": "SASL_PLAINTEXT", "tls": {"verify": False}},
            "tls needs security_protocol SSL or SASL_SSL, not SASL_PLAINTEXT",
        ),
        ({"tls": {"ca_file": "/ca.pem"}}, "tls needs security_protocol SSL or SASL_SSL"),
        (
            {"security_protocol": "SSL", "tls": {"key_file": "/client.key"}},
            "key_file needs cert_file",
        ),
    ],
)
def test_tls_config_mistakes_are_config_errors(
    kafka: dict[str, object], problem: str, tmp_path: Path
) -> None:
    """`natsbridge validate` reports them, at the connection's place in the file."""
    if kafka.get("security_protocol") == "SASL_PLAINTEXT":
        # (a secret is redacted from every message: it must not be a common letter)
        kafka |= {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "pw-7f3a"}
    with pytest.raises(ConfigError) as caught:
        load_route(
            tmp_path,
            "127.0.0.1:9095",
            {"connection": "nats", "subject": "in.*"},
            {"connection": "kafka", "topic": "t"},
            kafka,
        )
    problems = caught.value.problems
    assert any(problem in p and "connections.kafka" in p for p in problems), problems
