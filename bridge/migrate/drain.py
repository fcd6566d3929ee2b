"""`natsbridge drain --from CONNECTION:ADDRESS --to CONNECTION:ADDRESS -c FILE [--until-empty]`.

Moves what sits in a queue, topic or stream into another (RabbitMQ Shovel's
`src-delete-after` use case: empty a legacy queue into JetStream, or a stream back). It is
one ordinary `at_least_once` route over the config's connections, run by the bridge's own
runtime: a message is settled at its source only once its copy is confirmed durable in
the buffer, and taken from the buffer only once the destination confirmed it, so nothing
is lost; a message that cannot be delivered is dead-lettered with its reason (counted in
the final line). ADDRESS is read by the connection's kind (its `parity` module):

* amqp: ``QUEUE`` as a source; ``EXCHANGE[/ROUTING_KEY]`` as a destination;
* kafka: ``TOPIC`` (from its earliest record, consumer group ``natsbridge-<route>``);
* nats: ``STREAM/SUBJECT`` (SUBJECT a pattern as a source, read through a durable
  consumer named after the route; a template as a destination).

The route is ``drain-<digest of both ends>`` and runs as bridge ``<bridge id>-<route>``,
so that what the bridge (or another drain) copied from a connection can be drained back
to it: loop prevention drops only a bridge's own echoes. The name is stable: a drain
that is stopped and run again goes on where it stopped. Its buffer lives in
``<data_dir>/drains/<route>`` (not the running bridge's); the admin endpoint is off.
`--until-empty` stops once the route is connected at both ends, nothing has moved for
`IDLE_ROUNDS` seconds and the buffer is empty; without it the drain runs until
SIGTERM/^C. A route that fails for good (a refused login, a missing queue) stops the
drain with exit 1 and its error.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from natsbridge.bridge.config.loader import Config, load_config
from natsbridge.bridge.config.source import YamlSyntaxError, read_document
from natsbridge.bridge.errors import BridgeError
from natsbridge.bridge.migrate.kinds import drain_addresses
from natsbridge.bridge.runtime.stats import RouteState, RouteStats

EXIT_OK = 0
EXIT_FAILED = 1
PROGRESS_S = 1.0  # on a terminal; otherwise a line every PROGRESS_LOG_S
PROGRESS_LOG_S = 10.0
IDLE_ROUNDS = 4  # seconds without movement, connected, buffer empty: the source is empty


def add_parsers(commands: Any) -> None:
    """Register `drain`."""
    drain = commands.add_parser(
        "drain", help="move what sits in a queue/topic/stream to another, then stop"
    )
    drain.add_argument("-c", "--config", required=True, help="config file with the connections")
    drain.add_argument("--from", dest="source", required=True, metavar="CONNECTION:ADDRESS")
    drain.add_argument("--to", dest="sink", required=True, metavar="CONNECTION:ADDRESS")
    drain.add_argument("--until-empty", action="store_true", help="stop once the source is empty")
    drain.set_defaults(func=_drain)


def _end(text: str, option: str) -> tuple[str, str]:
    connection, sep, address = text.partition(":")
    if not (sep and connection and address):
        raise BridgeError(f"{option} takes CONNECTION:ADDRESS, found {text!r}")
    return connection, address


def drain_config(path: str, source: str, sink: str) -> Config:
    """The config at `path` running only the drain route from `source` to `sink`."""
    (from_connection, from_address), (to_connection, to_address) = (
        _end(source, "--from"),
        _end(sink, "--to"),
    )
    kinds = _kinds(path)
    if not kinds:
        load_config(path)  # raises ConfigError with what is wrong with the file
    for option, connection in (("--from", from_connection), ("--to", to_connection)):
        if connection not in kinds:
            known = ", ".join(kinds) or "none"
            raise BridgeError(f"{option}: no connection named {connection!r} (defined: {known})")
    name = "drain-" + hashlib.sha256(f"{source}\n{sink}".encode()).hexdigest()[:12]
    route = {
        "name": name,
        "from": {
            "connection": from_connection,
            **drain_addresses(kinds[from_connection]).drain_source(from_address, name),
        },
        "to": {
            "connection": to_connection,
            **drain_addresses(kinds[to_connection]).drain_sink(to_address),
        },
        "delivery": "at_least_once",
    }
    config = load_config(path, routes=[route])
    bridge = config.bridge.model_copy(
        update={
            # Its own id: what the bridge copied from a connection may be drained back to it
            # (loop prevention drops only what this very bridge id took from there).
            "id": f"{config.bridge.id[: 63 - len(name)]}-{name}",
            "data_dir": str(Path(config.bridge.data_dir) / "drains" / name),
            "admin": config.bridge.admin.model_copy(update={"enabled": False}),
        }
    )
    return replace(config, bridge=bridge)


def _kinds(path: str) -> dict[str, str]:
    """Connection name -> kind, as the file writes them (checked when the route is)."""
    try:
        connections = read_document(path).data.get("connections")
    except (OSError, YamlSyntaxError, AttributeError):
        return {}  # load_config says what is wrong with the file
    if not isinstance(connections, dict):
        return {}
    return {
        str(name): str(body.get("kind"))
        for name, body in connections.items()
        if isinstance(body, dict)
    }


def _drain(args: argparse.Namespace) -> int:
    from natsbridge.bridge import logs

    config = drain_config(args.config, args.source, args.sink)
    logs.configure("warning", None)
    stats = asyncio.run(run(config, until_empty=args.until_empty))
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the progress line
    if stats is None:
        return EXIT_FAILED
    if stats.state is RouteState.FAILED:
        raise BridgeError(f"drain failed: {stats.last_error}")
    line = f"drained {stats.delivered} messages from {args.source} to {args.sink}"
    dead = sum(stats.dead_lettered.values())
    if dead:
        line += f"; {dead} dead-lettered (natsbridge dlq ls --data-dir {config.bridge.data_dir})"
    if stats.looped:
        line += f"; {stats.looped} dropped as echoes (this drain copied them from there)"
    if stats.buffer_depth:
        line += f"; {stats.buffer_depth} still buffered, delivered by the next run"
    print(line)
    return EXIT_OK if stats.buffer_depth == 0 else EXIT_FAILED


async def run(config: Config, until_empty: bool) -> RouteStats | None:
    """Run the drain route until empty (or stopped, or failed); its counters at the end."""
    from natsbridge.bridge.runtime.bridge import Bridge, install_signal_handlers

    os.makedirs(config.bridge.data_dir, mode=0o700, exist_ok=True)
    bridge = Bridge(config, load=lambda: config)
    install_signal_handlers(bridge)
    watchers = [
        asyncio.create_task(_progress(bridge)),
        asyncio.create_task(_watch(bridge, until_empty)),
    ]
    try:
        await bridge.run()
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return bridge.runners[0].stats if bridge.runners else None


async def _watch(bridge: Any, until_empty: bool) -> None:
    """Stop the bridge when its route failed for good, or (`until_empty`) ran dry."""
    idle, last = 0, None
    while True:
        await asyncio.sleep(1.0)
        if not bridge.runners:
            continue
        stats: RouteStats = bridge.runners[0].stats
        if stats.state is RouteState.FAILED:
            bridge.stop()
            return
        moved = (stats.received, stats.delivered)
        ready = stats.source_connected and stats.sink_connected and stats.buffer_depth == 0
        idle = idle + 1 if ready and moved == last else 0
        last = moved
        if until_empty and idle >= IDLE_ROUNDS:
            bridge.stop()
            return


async def _progress(bridge: Any) -> None:
    """Moved so far, on one line (a terminal) or a line every PROGRESS_LOG_S (a log)."""
    tty = sys.stderr.isatty()
    last = 0.0
    while True:
        await asyncio.sleep(PROGRESS_S)
        if not bridge.runners or (not tty and time.monotonic() - last < PROGRESS_LOG_S):
            continue
        last = time.monotonic()
        stats: RouteStats = bridge.runners[0].stats
        line = (
            f"drain: {stats.received} read, {stats.delivered} delivered, "
            f"{stats.buffer_depth} buffered, {stats.rate_out:.0f}/s"
        )
        print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", file=sys.stderr)
