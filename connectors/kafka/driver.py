"""Every place the Kafka connector touches kafka-python's private internals, behind a version guard.

kafka-python 3.0 (as tested: `TESTED`) gives no public way to

* learn why a client could not bootstrap (a refused SASL login, an untrusted broker
  certificate): `NetClients`, the network-client factory, watches each broker
  connection through the network client's private `_manager.get_connection` and the
  connection's `close_future` / `init_future` / `broker_version_data`;
* read a record whose header name is not UTF-8: `read_header_names_leniently` wraps the
  private `DefaultRecordBatch._read_msg`.

Importing this module checks the installed kafka-python against `TESTED` and raises
DriverVersionError naming both otherwise (tests/connectors/test_drivers.py).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import kafka.errors as ke
from kafka.net.compat import KafkaNetClient
from kafka.record.default_records import DefaultRecordBatch

from natsbridge.bridge.drivers import require

DISTRIBUTION = "kafka-python"
TESTED = ((3, 0), (3, 1))
"""kafka-python >=3.0,<3.1 (pyproject.toml pins the same range)."""

VERSION = require(DISTRIBUTION, *TESTED)


def ssl_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The ssl error behind `exc` (kafka-python wraps a failed handshake in its own), if any."""
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class NetClients:
    """The network-client factory handed to kafka-python; keeps what it made.

    kafka-python 3.0 reports a refused SASL login only in a log line before it retries;
    the factory watches each new broker connection's initialisation for it instead.
    """

    def __init__(self, sasl: bool) -> None:
        self.sasl = sasl
        self.watching = True  # only while the client is being built
        self.made: list[Any] = []
        self.failures: list[BaseException] = []
        self.tls_failures: list[ssl.SSLError] = []

    def __call__(self, **configs: Any) -> Any:
        client = KafkaNetClient(**configs)
        self.made.append(client)
        manager = getattr(client, "_manager", None)
        get_connection = getattr(manager, "get_connection", None)
        if manager is not None and get_connection is not None:

            def watched(*args: Any, **kwargs: Any) -> Any:
                connection = get_connection(*args, **kwargs)
                with contextlib.suppress(AttributeError):
                    connection.close_future.add_errback(self._lost, connection)
                return connection

            manager.get_connection = watched
        return client

    def _lost(self, connection: Any, exc: BaseException) -> None:
        """A broker connection closed with `exc`: remember it when it looks like a refused login."""
        if not self.watching:
            return
        tls = ssl_error(exc)
        if tls is not None:
            self.tls_failures.append(tls)
            return
        if isinstance(exc, ke.SaslAuthenticationFailedError | ke.AuthorizationError):
            self.failures.append(exc)
            return
        # Kafka closes the socket right after refusing SASL credentials, and kafka-python
        # may see the close before the refusal: a connection that got as far as the API
        # versions (the broker is up and speaks Kafka) but never finished initialising
        # failed in the SASL exchange.
        init = getattr(connection, "init_future", None)
        if (
            self.sasl
            and getattr(connection, "broker_version_data", None) is not None
            and init is not None
            and init.is_done
            and init.failed()
        ):
            self.failures.append(
                ke.SaslAuthenticationFailedError(
                    "the broker closed the connection during SASL authentication"
                )
            )

    def auth_failure(self) -> BaseException | None:
        """The SASL/authorization failure seen while connecting, if any."""
        return self.failures[0] if self.failures else None

    def tls_failure(self) -> ssl.SSLError | None:
        """The last TLS handshake failure seen while connecting, if any."""
        return self.tls_failures[-1] if self.tls_failures else None

    def close(self) -> None:
        for client in self.made:
            with contextlib.suppress(Exception):
                client.close()


class _RawName(str):
    """A header name read with ``surrogateescape``; encodes to its bytes again.

    kafka-python's fetcher measures every name it read with ``name.encode("utf-8")``.
    """

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, encoding, "surrogateescape")


class _LenientSlices(bytes):
    """A record batch's bytes whose slices decode with ``surrogateescape``."""

    def __getitem__(self, key: Any) -> Any:
        got = bytes.__getitem__(self, key)
        return _LenientSlices(got) if isinstance(key, slice) else got

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return _RawName(bytes.decode(self, encoding, "surrogateescape"))


def read_header_names_leniently() -> None:
    """Make kafka-python 3.0 read a header name that is not UTF-8 instead of failing (idempotent).

    Its `DefaultRecordBatch._read_msg` decodes header names strictly, and the
    UnicodeDecodeError becomes a CorruptRecordError in the fetcher, raised by every
    poll() for that partition: the source stopped and the bridge exited, one record from
    any producer (librdkafka writes any bytes) sufficed. Only on that error, the
    record is read again from the same position over a copy of the batch whose slices
    decode with ``surrogateescape`` (names keep their bytes as surrogates; the key, value and
    other bytes are the same), and so are the batch's later records. Everything else in
    the reader stays kafka-python's own, and a record is delivered, not skipped, so the
    commit watermark needs no exception. A kafka-python without that method (the
    connector moves to confluent-kafka) is left alone; tests/connectors/test_kafka.py
    fails then.
    """
    original = DefaultRecordBatch._read_msg
    if getattr(original, "lenient", False):
        return

    def _read_msg(self: Any, *args: Any, **kwargs: Any) -> Any:
        pos = self._pos
        try:
            return original(self, *args, **kwargs)
        except UnicodeDecodeError:
            # One copy per batch: the rest of this batch is read over it too.
            self._pos = pos
            self._buffer = _LenientSlices(self._buffer)
            return original(self, *args, **kwargs)

    _read_msg.lenient = True  # type: ignore[attr-defined]
    DefaultRecordBatch._read_msg = _read_msg
