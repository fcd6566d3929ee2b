"""A data dir that cannot hold a buffer is one clear line and exit 1, never a traceback.

Each case runs the real CLI as a child process (`natsbridge run`, `streams`, `dlq ls`):
what an operator sees is the contract. A dangling `buffer.db` link must never be
replaced by an empty database. New stores are private: dir 0700, files 0600.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from natsbridge.bridge.broker.config import StreamConfig
from natsbridge.bridge.broker.store import DB_NAME, LOCK_NAME, Store
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers
from tests.broker.mounts import remount, tmpfs

CONFIG = """\
version: 1
bridge: {{id: b, data_dir: '{data_dir}', admin: {{enabled: false}}}}
connections: {{nats: {{kind: nats, servers: ['nats://127.0.0.1:1']}}}}
routes:
  - {{name: r, from: {{connection: nats, subject: 'in.*'}},
     to: {{connection: nats, subject: 'out.{{{{wildcard(1)}}}}'}}}}
"""


def natsbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_bridge(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(data_dir=data_dir))
    return natsbridge("run", "-c", str(config), "--once", "--log-format", "text")


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 1, `message` on the last line of stderr, and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("natsbridge: ") and message in last, result.stderr


def every_command(tmp_path: Path, data_dir: Path, message: str) -> None:
    assert_refused(run_bridge(tmp_path, data_dir), message)
    assert_refused(natsbridge("streams", "--data-dir", str(data_dir)), message)
    assert_refused(natsbridge("dlq", "ls", "--data-dir", str(data_dir)), message)


def make_store(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        store.add_stream(StreamConfig(name="orders", dead_letter="orders.dead-letters"))


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    every_command(tmp_path, data_dir, f"data dir {data_dir} is not a directory")
    assert data_dir.read_text() == "not a directory"


def test_a_dangling_buffer_link_is_refused_and_left_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    target = tmp_path / "unmounted" / DB_NAME
    (data_dir / DB_NAME).symlink_to(target)
    every_command(tmp_path, data_dir, "which does not exist; refusing to start an empty buffer")
    assert (data_dir / DB_NAME).is_symlink() and not target.exists()
    assert os.readlink(data_dir / DB_NAME) == str(target)


def test_a_buffer_link_to_a_store_is_followed(tmp_path: Path) -> None:
    make_store(tmp_path / "real")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DB_NAME).symlink_to(tmp_path / "real" / DB_NAME)
    result = natsbridge("streams", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr


def test_an_unreadable_buffer_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / DB_NAME).mkdir(parents=True)  # unreadable as a file, even for root
    every_command(tmp_path, data_dir, f"cannot read buffer database {data_dir / DB_NAME}")


def test_a_corrupt_buffer_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DB_NAME).write_bytes(b"\x00" * 4096)
    every_command(tmp_path, data_dir, "is damaged (not an SQLite database: bad header)")


def test_a_read_only_mount_without_a_data_dir(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        remount(mnt, read_only=True)
        data_dir = mnt / "data"
        assert_refused(
            run_bridge(tmp_path, data_dir),
            f"cannot create data dir {data_dir}: Read-only file system",
        )


def test_a_read_only_mount_with_a_store(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        make_store(mnt / "data")
        remount(mnt, read_only=True)
        assert_refused(
            run_bridge(tmp_path, mnt / "data"),
            f"data dir {mnt / 'data'} is not writable: Read-only file system",
        )
        # The operator views still work: nothing can change a file on a read-only mount.
        result = natsbridge("streams", "--data-dir", str(mnt / "data"))
        assert result.returncode == 0 and "orders" in result.stdout, result
        result = natsbridge("dlq", "ls", "--data-dir", str(mnt / "data"))
        assert result.returncode == 0 and "orders.dead-letters" in result.stdout, result


def test_a_new_store_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "parent" / "data"
    store = Store.open(data_dir)
    try:
        store.commit()
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finally:
        store.close()


def test_a_buffer_file_open_to_others_is_kept_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    make_store(data_dir)
    (data_dir / DB_NAME).chmod(0o644)  # as an older version made it
    data_dir.chmod(0o755)  # names only: no warning for the dir

    async def open_and_close() -> None:
        buffers = EmbeddedBuffers(data_dir)
        await buffers.open()
        await buffers.close()

    with caplog.at_level(logging.WARNING, logger="natsbridge"):
        asyncio.run(open_and_close())
        (data_dir / DB_NAME).chmod(0o600)
        asyncio.run(open_and_close())
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755
    warned = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "data_dir_mode"]
    assert warned == [
        f"{data_dir / DB_NAME} is readable by other users (mode 644) and holds message "
        "payloads: consider chmod 600 (its -wal and -shm files follow its mode)"
    ]
