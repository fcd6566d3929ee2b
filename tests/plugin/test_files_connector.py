"""The files connector through natsbridge's own surface: config loader, registry, Source/Sink.

Everything is built as the bridge builds it (a YAML file, `load_config`, the registry's
connector for `kind: files`) on real temporary directories; no broker is needed, the NATS
side of each route is only configured.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugin.installed import require

require()

from natsbridge.bridge.config.loader import Route, load_config  # noqa: E402
from natsbridge.bridge.connector import Incoming, Sink, Source  # noqa: E402
from natsbridge.bridge.envelope import Envelope  # noqa: E402
from natsbridge.bridge.errors import (  # noqa: E402
    ConfigError,
    ConnectionLost,
    MappingError,
    MessageRejected,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.registry import load_connector  # noqa: E402

NATS = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}


def config(tmp_path: Path, source: dict[str, Any], sink: dict[str, Any]) -> Path:
    """A config file with route `in` (files -> nats) and route `out` (nats -> files)."""
    document = {
        "version": 1,
        "bridge": {"id": "plugin-test", "data_dir": str(tmp_path / "data")},
        "connections": {"spool": {"kind": "files", "root": str(tmp_path / "spool")}, "nats": NATS},
        "routes": [
            {
                "name": "in",
                "from": {"connection": "spool", **source},
                "to": {"connection": "nats", "subject": "files.{{wildcard(1)}}"},
            },
            {
                "name": "out",
                "from": {"connection": "nats", "subject": "out.*"},
                "to": {"connection": "spool", **sink},
            },
        ],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def endpoints(tmp_path: Path, **sink: Any) -> tuple[Route, Source, Route, Sink]:
    loaded = load_config(
        config(
            tmp_path,
            {"directory": "inbox", "pattern": "*.txt", "poll_interval": 0.05},
            {"directory": "outbox", "filename": "{{wildcard(1)}}.txt", **sink},
        )
    )
    into, out = loaded.routes
    files = load_connector("files")
    source = files.source(into, loaded.connections["spool"], loaded.bridge)
    sink_ = files.sink(out, loaded.connections["spool"], loaded.bridge)
    return into, source, out, sink_


async def receive_all(source: Source, count: int) -> list[Incoming]:
    got: list[Incoming] = []
    for _ in range(100):
        got.extend(await source.receive(100, 0.2))
        if len(got) >= count:
            break
    return got


def test_a_files_route_validates_and_its_mistakes_are_reported(tmp_path: Path) -> None:
    path = config(tmp_path, {"pattern": "*.txt"}, {"filename": "{{wildcard(1)}}"})
    assert [r.name for r in load_config(path).routes] == ["in", "out"]

    bad = config(
        tmp_path,
        {"directory": "../escape", "pattern": "*.txt", "colour": "red"},
        {"filename": "{{wildcard(1)}}"},
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    problems = "\n".join(caught.value.problems)
    assert "inside the connection's root" in problems
    assert "colour" in problems

    path = config(tmp_path, {"pattern": "*.txt"}, {"filename": "{{wildcard(1)}}"})
    document = yaml.safe_load(path.read_text())
    document["routes"][0]["to"]["subject"] = "files.{{wildcard(2)}}"  # the glob has one *
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=r"wildcard\(2\)"):
        load_config(path)


def test_source_reads_acks_into_done_and_rejects_into_rejected(tmp_path: Path) -> None:
    async def run() -> None:
        _, source, _, _ = endpoints(tmp_path)
        inbox = tmp_path / "spool" / "inbox"
        inbox.mkdir(parents=True)
        for name in ("a.txt", "b.txt", "c.txt", "skip.json"):
            (inbox / name).write_text(name)
        (inbox / "a.txt.headers.json").write_text(json.dumps({"X-Id": ["7", "8"]}))
        await source.connect()
        a, b, c = sorted(await receive_all(source, 3), key=lambda m: m.envelope.subject)
        assert (a.envelope.subject, a.envelope.payload) == ("a.txt", b"a.txt")
        assert a.envelope.headers == {"X-Id": ["7", "8"]}
        assert a.envelope.origin is not None and a.envelope.origin.kind == "files"

        a.ack(None)
        b.ack(PermanentError("refused"))
        c.ack(RetryableError("later"))
        [again] = await receive_all(source, 1)  # the nacked one, read again
        assert again.envelope.subject == "c.txt"
        assert again.envelope.msg_id == c.envelope.msg_id
        await source.close()  # `again` unsettled: it stays for the next connection

        assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.txt", "a.txt.headers.json"]
        assert [p.name for p in (inbox / "rejected").iterdir()] == ["b.txt"]
        assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["c.txt", "skip.json"]

        await source.connect()
        [back] = await receive_all(source, 1)
        assert back.envelope.subject == "c.txt"
        back.ack(None)
        await source.close()
        assert (inbox / "done" / "c.txt").read_text() == "c.txt"

    asyncio.run(run())


def test_an_unreadable_file_is_handed_over_with_its_error_and_ends_in_rejected(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        _, source, _, _ = endpoints(tmp_path)
        inbox = tmp_path / "spool" / "inbox"
        inbox.mkdir(parents=True)
        (inbox / "bad.txt").write_text("payload")
        (inbox / "bad.txt.headers.json").write_text("[1, 2")
        await source.connect()
        [bad] = await receive_all(source, 1)
        assert isinstance(bad.error, MappingError)
        assert bad.envelope.payload == b"payload"
        bad.ack(None)  # what the runtime does once it dead-lettered it
        await source.close()
        assert sorted(p.name for p in (inbox / "rejected").iterdir()) == [
            "bad.txt",
            "bad.txt.headers.json",
        ]

    asyncio.run(run())


def test_source_needs_its_directory_when_it_may_not_create_it(tmp_path: Path) -> None:
    async def run() -> None:
        loaded = load_config(
            config(tmp_path, {"directory": "missing", "create": False}, {"filename": "x"})
        )
        source = load_connector("files").source(
            loaded.routes[0], loaded.connections["spool"], loaded.bridge
        )
        with pytest.raises(PermanentError, match="missing"):
            await source.connect()
        with pytest.raises(ConnectionLost):
            await source.receive(1, 0.01)

    asyncio.run(run())


def test_sink_writes_each_message_and_reports_each_failure(tmp_path: Path) -> None:
    async def run() -> None:
        _, _, _, sink = endpoints(tmp_path)
        envelope = Envelope("ignored", b"")
        assert isinstance((await sink.send_batch([envelope]))[0], ConnectionLost)
        await sink.connect()
        outbox = tmp_path / "spool" / "outbox"
        (outbox / "taken.txt").write_bytes(b"someone else's")
        results = await sink.send_batch(
            [
                Envelope("one.txt", b"1", {"A": ["x"]}),
                Envelope("../up.txt", b"2"),
                Envelope("taken.txt", b"3"),
                Envelope("one.txt", b"1"),  # a redelivery: same name, same content
                Envelope("two.txt", b"\x00two"),
            ]
        )
        await sink.close()
        assert results[0] is None and results[3] is None and results[4] is None
        assert isinstance(results[1], MappingError)
        assert isinstance(results[2], MessageRejected)
        assert sorted(p.name for p in outbox.iterdir()) == [
            "one.txt",
            "one.txt.headers.json",
            "taken.txt",
            "two.txt",
        ]
        assert (outbox / "two.txt").read_bytes() == b"\x00two"
        assert (outbox / "taken.txt").read_bytes() == b"someone else's"

    asyncio.run(run())


def test_sink_reports_a_vanished_directory_as_a_lost_connection_and_recovers(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        _, _, _, sink = endpoints(tmp_path)
        await sink.connect()
        outbox = tmp_path / "spool" / "outbox"
        outbox.rmdir()
        [lost] = await sink.send_batch([Envelope("m.txt", b"1")])
        assert isinstance(lost, ConnectionLost)
        await sink.connect()  # what the runtime does next
        assert await sink.send_batch([Envelope("m.txt", b"1")]) == [None]
        await sink.close()
        assert (outbox / "m.txt").read_bytes() == b"1"

    asyncio.run(run())


def test_overwrite_lets_a_later_message_replace_a_file(tmp_path: Path) -> None:
    async def run() -> None:
        _, _, _, sink = endpoints(tmp_path, overwrite=True)
        await sink.connect()
        assert await sink.send_batch([Envelope("s", b"v1"), Envelope("s", b"v2")]) == [None, None]
        await sink.close()
        assert (tmp_path / "spool" / "outbox" / "s").read_bytes() == b"v2"

    asyncio.run(run())
