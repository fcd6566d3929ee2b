"""Raw pika (BlockingConnection) helpers for the AMQP connector tests: the broker's own view."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.connectors.amqp.config import AmqpConnection

Message = tuple[Basic.GetOk | Basic.Deliver, BasicProperties, bytes]


def load_route(
    directory: Path,
    amqp_url: str,
    source: dict[str, Any],
    sink: dict[str, Any],
    **route: Any,
) -> tuple[Route, AmqpConnection, BridgeSettings]:
    """Write a one-route config (amqp and nats connections) and load it as the bridge does.

    Endpoints name their connection: `{"connection": "rmq", ...}` or `"nats"`.
    """
    name = route.pop("name")
    body = {"name": name, "from": source, "to": sink, **route}
    connections = {
        "rmq": {"kind": "amqp", "url": amqp_url, "heartbeat": "10s"},
        "nats": {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]},
    }
    path = directory / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: test-bridge}\n"
        f"connections: {json.dumps(connections)}\n"
        f"routes:\n  - {json.dumps(body)}\n"
    )
    config = load_config(path)
    [loaded] = config.routes
    connection = config.connections["rmq"]
    assert isinstance(connection, AmqpConnection)
    return loaded, connection, config.bridge


class Raw:
    """One blocking connection and channel, for arranging and inspecting the broker."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel: BlockingChannel = self.connection.channel()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def queue(self, name: str, **arguments: Any) -> None:
        self.channel.queue_declare(name, durable=True, arguments=arguments or None)

    def exchange(self, name: str, kind: str = "topic") -> None:
        self.channel.exchange_declare(name, exchange_type=kind, durable=True)

    def bind(self, queue: str, exchange: str, key: str = "#") -> None:
        self.channel.queue_bind(queue, exchange, routing_key=key)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: BasicProperties | None = None,
    ) -> None:
        self.channel.basic_publish(exchange, routing_key, body, properties)

    def get(self, queue: str, count: int, timeout: float = 10.0) -> list[Message]:
        """Exactly `count` messages from `queue`, acked, in order (fails on timeout)."""
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                assert time.monotonic() < deadline, f"got {len(out)} of {count} from {queue}"
                self.connection.sleep(0.02)
                continue
            out.append((method, properties, body))
        return out

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def delete(self, queues: Sequence[str] = (), exchanges: Sequence[str] = ()) -> None:
        for queue in queues:
            self.channel.queue_delete(queue)
        for exchange in exchanges:
            self.channel.exchange_delete(exchange)


@contextmanager
def raw(url: str) -> Iterator[Raw]:
    client = Raw(url)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def rpc_server(url: str, queue: str) -> Iterator[list[BasicProperties]]:
    """A pika RPC server on a thread: answers each request on `queue` with its body upper-cased.

    The reply carries the request's correlation_id and a header `X-Served: yes`; the
    request properties seen are collected in the yielded list.
    """
    seen: list[BasicProperties] = []
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        with raw(url) as server:
            server.queue(queue)

            def on_request(
                channel: BlockingChannel,
                method: Basic.Deliver,
                properties: BasicProperties,
                body: bytes,
            ) -> None:
                seen.append(properties)
                reply = BasicProperties(
                    correlation_id=properties.correlation_id, headers={"X-Served": "yes"}
                )
                channel.basic_publish("", properties.reply_to, body.upper(), reply)
                channel.basic_ack(method.delivery_tag)

            server.channel.basic_consume(queue, on_request)
            ready.set()
            while not stop.is_set():
                server.connection.process_data_events(time_limit=0.1)
            server.channel.queue_delete(queue)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "RPC server did not start"
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1: (ca, cert, key)."""
    import subprocess

    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=natsbridge test CA", "-keyout", ca_key, "-out", ca)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", key, "-out", csr)  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "1", "-extfile", ext, "-out", cert)  # fmt: skip
    return ca, cert, key


@contextmanager
def tls_proxy(cert: Path, key: Path, upstream: tuple[str, int]) -> Iterator[int]:
    """A TLS-terminating TCP proxy to `upstream` on a thread; yields its loopback port."""
    import asyncio
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    started: list[Any] = []
    ready = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        started.append(server)
        ready.set()
        async with server:
            with contextlib.suppress(asyncio.CancelledError):  # closed by the test
                await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    server = started[0]
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(server.close)
        thread.join(5)
