"""Every buffer backend a config's routes use, opened on first use and closed together.

A route's effective `buffer` (Route.buffer) picks its backend: `embedded` the data dir's
SQLite store (bridge.runtime.embedded), `jetstream` the streams behind the NATS
connection it names (opened by that connection's kind: `ConnectorKind.open_buffers`).
A config whose routes are all on JetStream never touches the data dir.
"""

from __future__ import annotations

from natsbridge.bridge.broker.broker import Broker
from natsbridge.bridge.config.loader import Config, Route
from natsbridge.bridge.config.model import BufferMode
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.buffer import Buffers, RouteBuffer
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers


class RouteBuffers:
    """The backends of `config`'s routes, keyed by connection name (None: embedded)."""

    def __init__(self, config: Config) -> None:
        self.config = config  # replaced on reload: a new route may name a new connection
        self.backends: dict[str | None, Buffers] = {}

    async def route(self, route: Route) -> RouteBuffer:
        """The buffer of `route`, from its backend (opened now if it is the first use)."""
        name = route.buffer.connection if route.buffer.mode is BufferMode.JETSTREAM else None
        backend = self.backends.get(name)
        if backend is None:
            backend = self._backend(name)
            await backend.open()
            self.backends[name] = backend
        return await backend.route(route)

    def _backend(self, name: str | None) -> Buffers:
        if name is None:
            return EmbeddedBuffers(self.config.bridge.data_dir)
        connection = self.config.connections[name]
        kind = load_connector(connection.model_dump(include={"kind"})["kind"])
        return kind.open_buffers(name, connection, self.config.bridge)

    def embedded_broker(self) -> Broker | None:
        """The data dir's broker, once a route buffers there (dead-letter operations)."""
        embedded = self.backends.get(None)
        return embedded.broker if isinstance(embedded, EmbeddedBuffers) else None

    async def close(self) -> None:
        """Close every backend opened (what each holds pending is made durable first)."""
        backends, self.backends = list(self.backends.values()), {}
        for backend in backends:
            await backend.close()
