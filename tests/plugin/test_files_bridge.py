"""The out-of-tree `files` connector in a real `natsbridge run`: files -> JetStream -> files.

The plugin is installed with pip (deploy/dev/test.sh), not imported from the tree: this is
the proof that a connector can live outside natsbridge. Messages are counted both ways:
every file ends in JetStream (and in done/) or is dead-lettered (and in rejected/), and
every JetStream message ends as one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.plugin.installed import require

require()

from tests.e2e.bridge_process import BridgeProcess, free_port, write_config  # noqa: E402
from tests.e2e.jetstream import stream_count  # noqa: E402

pytestmark = pytest.mark.nats

WAIT_S = 90.0
COUNT = 40


@pytest.fixture
def tag(nats_url: str) -> Iterator[str]:
    """A tag for this test's names; its streams are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    yield tag

    async def drop_streams() -> None:
        nc = await nats.connect(nats_url)
        try:
            for info in await nc.jsm().streams_info():
                if tag in info.config.name:
                    await nc.jsm().delete_stream(info.config.name)
        finally:
            await nc.close()

    with contextlib.suppress(Exception):
        asyncio.run(drop_streams())


def bridge_config(tag: str, nats_url: str, root: Path, data: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"plugin-{tag}", "data_dir": str(data)},
        "connections": {
            "spool": {"kind": "files", "root": str(root)},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": f"files-in-{tag}",
                "from": {
                    "connection": "spool",
                    "directory": "inbox",
                    "pattern": "*.txt",
                    "poll_interval": "0.2s",
                },
                "to": {
                    "connection": "nats",
                    "subject": f"plugin-{tag}.in.{{{{wildcard(1)}}}}",
                    "jetstream": {"stream": f"PLUGIN_IN_{tag}"},
                },
            },
            {
                "name": f"files-out-{tag}",
                "from": {
                    "connection": "nats",
                    "subject": f"plugin-{tag}.out.*",
                    "jetstream": {"stream": f"PLUGIN_OUT_{tag}"},
                },
                "to": {
                    "connection": "spool",
                    "directory": "outbox",
                    "filename": "{{wildcard(1)}}.txt",
                },
            },
        ],
    }


def put(directory: Path, name: str, data: bytes) -> None:
    """Write a file the way a producer should: as a dot-file, renamed when complete."""
    temporary = directory / f".{name}"
    temporary.write_bytes(data)
    temporary.rename(directory / name)


def wait_for(what: str, check: Callable[[], bool], bridge: BridgeProcess) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{bridge.tail()}"
        time.sleep(0.2)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


async def jetstream_messages(nats_url: str, stream: str, subjects: str) -> list[Any]:
    nc = await nats.connect(nats_url)
    try:
        consumer = await nc.jetstream().pull_subscribe(subjects, stream=stream)
        got: list[Any] = []
        while len(got) < COUNT:
            got.extend(await consumer.fetch(COUNT - len(got), timeout=10))
        return got
    finally:
        await nc.close()


async def publish(nats_url: str, tag: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=f"PLUGIN_OUT_{tag}", subjects=[f"plugin-{tag}.out.*"])
        for i in range(COUNT):
            headers = {"X-Seq": str(i)} if i % 10 == 0 else None
            await js.publish(f"plugin-{tag}.out.r{i:03}", f"reply {i}".encode(), headers=headers)
    finally:
        await nc.close()


def test_files_to_jetstream_and_jetstream_to_files(tmp_path: Path, nats_url: str, tag: str) -> None:
    root = tmp_path / "spool"
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir(parents=True)
    for i in range(COUNT):
        if i % 10 == 0:
            put(inbox, f"m{i:03}.txt.headers.json", json.dumps({"X-Seq": str(i)}).encode())
        put(inbox, f"m{i:03}.txt", f"file {i}".encode())
    put(inbox, "poison.txt.headers.json", b"{not json")  # dead-lettered, moved to rejected/
    put(inbox, "poison.txt", b"poison")
    put(inbox, "other.dat", b"not *.txt: left alone")
    asyncio.run(publish(nats_url, tag))
    config = bridge_config(tag, nats_url, root, tmp_path / "data")
    path = write_config(tmp_path / "bridge.yaml", config)
    bridge = BridgeProcess(path, tmp_path / "data")
    try:
        bridge.start()

        # files -> JetStream: each file once in the stream, then in done/; the poison one
        # dead-lettered and in rejected/; nothing else touched.
        in_stream = f"PLUGIN_IN_{tag}"
        wait_for(
            "every file in JetStream and settled",
            lambda: (
                asyncio.run(stream_count(nats_url, in_stream)) >= COUNT
                and len(names(inbox / "done")) == COUNT + COUNT // 10
                and names(inbox / "rejected") == ["poison.txt", "poison.txt.headers.json"]
            ),
            bridge,
        )
        assert names(inbox) == ["other.dat"]
        assert asyncio.run(stream_count(nats_url, in_stream)) == COUNT
        stored = asyncio.run(jetstream_messages(nats_url, in_stream, f"plugin-{tag}.in.*"))
        assert sorted(m.subject for m in stored) == [
            f"plugin-{tag}.in.m{i:03}" for i in range(COUNT)
        ]
        assert {m.subject: m.data for m in stored}[f"plugin-{tag}.in.m007"] == b"file 7"
        seqs = sorted(int(m.headers["X-Seq"]) for m in stored if m.headers and "X-Seq" in m.headers)
        assert seqs == list(range(0, COUNT, 10))

        # JetStream -> files: each message one file, its headers in the sidecar.
        expected = [f"r{i:03}.txt" for i in range(COUNT)]
        wait_for(
            "every JetStream message as a file",
            lambda: [n for n in names(outbox) if n.endswith(".txt")] == expected,
            bridge,
        )
        assert (outbox / "r012.txt").read_bytes() == b"reply 12"
        sidecar = json.loads((outbox / "r010.txt.headers.json").read_text())
        assert sidecar["X-Seq"] == ["10"]

        routes = bridge.routes()
        inbound = routes[f"files-in-{tag}"]["counters"]
        outbound = routes[f"files-out-{tag}"]["counters"]
        assert inbound["delivered"] == COUNT
        assert sum(inbound["dead_lettered"].values()) == 1
        assert outbound["delivered"] == COUNT
        assert sum(outbound["dead_lettered"].values()) == 0
        assert bridge.terminate() == 0
    finally:
        bridge.stop()


def test_kill_9_while_files_are_held_loses_none_and_exactly_once_duplicates_none(
    tmp_path: Path, nats_url: str, tag: str
) -> None:
    """A file is acked (moved to done/) only after the buffer committed it.

    The first bridge cannot reach NATS: its buffer fills (10 messages) and the route holds
    the batch it read, un-acked. kill -9 then; the second bridge, with the right NATS URL,
    must deliver every file exactly once (the id of a file read again is the same, so
    JetStream drops what it had already) and move every file to done/.
    """
    total = 100
    root = tmp_path / "spool"
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    for i in range(total):
        put(inbox, f"k{i:04}.txt", f"kill {i}".encode())

    def config(url: str) -> Path:
        document = bridge_config(tag, url, root, tmp_path / "data")
        inbound = document["routes"][0]
        # batches of 5 (max_in_flight) into a buffer that holds 10: the third is held
        inbound |= {"delivery": "exactly_once", "max_in_flight": 5, "buffer": {"max_msgs": 10}}
        document["routes"] = [inbound]
        return write_config(tmp_path / "bridge.yaml", document)

    route = f"files-in-{tag}"
    bridge = BridgeProcess(config(f"nats://127.0.0.1:{free_port()}"), tmp_path / "data")
    try:
        bridge.start(wait_ready=False)  # its sink never connects: never ready

        def held() -> bool:
            status, body = bridge.get("/api/routes")
            if status != 200:
                return False
            counters = next(r for r in body["routes"] if r["name"] == route)["counters"]
            return bool(counters["buffered"] >= 10 and counters["received"] > counters["acked"])

        wait_for("a full buffer holding read files un-acked", held, bridge)
        bridge.kill()
        assert len(names(inbox / "done")) <= 10  # only what the buffer took

        bridge.config = config(nats_url)
        bridge.start()
        stream = f"PLUGIN_IN_{tag}"
        wait_for(
            "every file in done/ and in JetStream",
            lambda: (
                len(names(inbox / "done")) == total
                and asyncio.run(stream_count(nats_url, stream)) >= total
            ),
            bridge,
        )
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
    assert names(inbox) == []
    assert names(inbox / "rejected") == []
    assert asyncio.run(stream_count(nats_url, stream)) == total


def natsbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_knows_the_files_kind(tmp_path: Path) -> None:
    config = bridge_config("t", "nats://127.0.0.1:4222", tmp_path / "spool", tmp_path / "d")
    path = write_config(tmp_path / "ok.yaml", config)
    result = natsbridge("validate", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "files-in-t" in result.stdout and "directory inbox" in result.stdout

    config["connections"]["spool"]["kind"] = "filez"
    result = natsbridge("validate", "-c", str(write_config(tmp_path / "typo.yaml", config)))
    assert result.returncode != 0
    assert "did you mean 'files'" in result.stderr, result.stderr
    assert re.search(r"expected kind one of [a-z, ]*\bfiles\b", result.stderr), result.stderr
