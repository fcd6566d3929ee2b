"""The files connector's directory logic (natsbridge_files.spool), on a real temporary directory."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.plugin.installed import require

require()

from natsbridge_files.spool import (  # noqa: E402
    NAME_MAX,
    SIDECAR,
    Outcome,
    Spool,
    check_name,
    glob_regex,
    write_file,
)


def put(directory: Path, name: str, payload: bytes, mtime_ns: int | None = None) -> Path:
    """A message file, with a chosen modification time (the spool's order)."""
    path = directory / name
    path.write_bytes(payload)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def opened(directory: Path, pattern: str = "*", max_size: int = 1024) -> Spool:
    spool = Spool(directory, pattern, max_size)
    spool.open(create=True)
    return spool


def test_take_reads_matching_files_oldest_first_and_nothing_else(tmp_path: Path) -> None:
    put(tmp_path, "b.json", b"B", 2_000)
    put(tmp_path, "a.json", b"A", 3_000)
    put(tmp_path, "c.json", b"C", 1_000)
    put(tmp_path, "notes.txt", b"not matching")
    put(tmp_path, ".d.json.tmp", b"being written")
    put(tmp_path, "c.json" + SIDECAR, b'{"X-Id": "c"}')
    (tmp_path / "sub.json").mkdir()
    spool = opened(tmp_path, "*.json")

    taken = spool.take(10)

    assert [(m.name, m.payload) for m in taken] == [
        ("c.json", b"C"),
        ("b.json", b"B"),
        ("a.json", b"A"),
    ]
    assert taken[0].headers == {"X-Id": ["c"]}
    assert taken[1].headers == {}
    assert all(m.error is None for m in taken)


def test_a_file_in_flight_is_not_read_again_until_released_or_reopened(tmp_path: Path) -> None:
    put(tmp_path, "one", b"1")
    spool = opened(tmp_path)
    [first] = spool.take(10)
    assert spool.take(10) == []

    spool.settle("one", Outcome.RETRY)  # a retryable nack: read again, same id
    [again] = spool.take(10)
    assert (again.payload, again.msg_id) == (b"1", first.msg_id)

    spool.open(create=False)  # a reconnect: whatever was unsettled comes back
    assert [m.name for m in spool.take(10)] == ["one"]


def test_limit_takes_the_oldest_and_leaves_the_rest_waiting(tmp_path: Path) -> None:
    for i in range(5):
        put(tmp_path, f"m{i}", b"x", 1_000 + i)
    spool = opened(tmp_path)
    assert [m.name for m in spool.take(2)] == ["m0", "m1"]
    assert [m.name for m in spool.take(10)] == ["m2", "m3", "m4"]


@pytest.mark.parametrize(
    ("outcome", "folder"), [(Outcome.DONE, "done"), (Outcome.REJECTED, "rejected")]
)
def test_settle_moves_the_file_and_its_sidecar(
    tmp_path: Path, outcome: Outcome, folder: str
) -> None:
    put(tmp_path, "m", b"payload")
    put(tmp_path, "m" + SIDECAR, b'{"A": ["1", "2"]}')
    spool = opened(tmp_path)
    spool.take(1)

    spool.settle("m", outcome)
    spool.settle("m", outcome)  # settling twice is harmless

    assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["m", "m" + SIDECAR]
    assert (tmp_path / folder / "m").read_bytes() == b"payload"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []
    assert spool.take(10) == []


def test_a_file_whose_folder_is_gone_stays_until_the_spool_is_opened_again(
    tmp_path: Path,
) -> None:
    put(tmp_path, "m", b"payload")
    spool = opened(tmp_path)
    spool.take(1)
    (tmp_path / "done").rmdir()  # an operator cleaned up

    with pytest.raises(FileNotFoundError):
        spool.settle("m", Outcome.DONE)
    assert (tmp_path / "m").read_bytes() == b"payload"
    assert spool.take(10) == []  # still in flight: not read twice meanwhile

    spool.open(create=False)  # the source reconnects: done/ is back, the file comes again
    [again] = spool.take(10)
    spool.settle(again.name, Outcome.DONE)
    assert (tmp_path / "done" / "m").read_bytes() == b"payload"


def test_an_unreadable_sidecar_or_a_file_too_large_is_a_message_with_an_error(
    tmp_path: Path,
) -> None:
    put(tmp_path, "bad-json", b"ok", 1_000)
    put(tmp_path, "bad-json" + SIDECAR, b"{not json")
    put(tmp_path, "bad-shape", b"ok", 2_000)
    put(tmp_path, "bad-shape" + SIDECAR, json.dumps({"A": [1]}).encode())
    put(tmp_path, "huge", b"x" * 1025, 3_000)
    spool = opened(tmp_path, max_size=1024)

    taken = spool.take(10)

    assert [m.name for m in taken] == ["bad-json", "bad-shape", "huge"]
    assert all(m.error is not None for m in taken)
    assert "bad-json" + SIDECAR in str(taken[0].error)
    assert "list of strings" in str(taken[1].error)
    assert "1025 bytes" in str(taken[2].error)
    assert taken[2].payload == b""  # not read: the file itself stays, in rejected/ once settled


def test_the_message_id_changes_when_a_file_is_replaced(tmp_path: Path) -> None:
    put(tmp_path, "m", b"first", 1_000)
    spool = opened(tmp_path)
    [first] = spool.take(1)
    spool.settle("m", Outcome.DONE)
    put(tmp_path, "m", b"second", 2_000)
    [second] = spool.take(1)
    assert first.msg_id != second.msg_id


def test_open_refuses_a_missing_directory_unless_it_may_create_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Spool(tmp_path / "missing").open(create=False)
    Spool(tmp_path / "made").open(create=True)
    assert {p.name for p in (tmp_path / "made").iterdir()} == {"done", "rejected"}


def test_every_file_ends_in_done_or_rejected_whatever_the_settlements(tmp_path: Path) -> None:
    """Counting: random acks, rejects, nacks and reconnects lose no file and move none twice."""
    names = [f"m{i:03}" for i in range(200)]
    for name in names:
        put(tmp_path, name, name.encode())
    spool = opened(tmp_path)
    rng = random.Random(15)
    settled: dict[str, Outcome] = {}
    while len(settled) < len(names):
        if rng.random() < 0.05:
            spool.open(create=False)
        for message in spool.take(rng.randint(1, 30)):
            outcome = rng.choice([Outcome.DONE, Outcome.REJECTED, Outcome.RETRY, None])
            if outcome is None:
                continue  # never settled: comes back after the next reopen
            spool.settle(message.name, outcome)
            if outcome is not Outcome.RETRY:
                settled.setdefault(message.name, outcome)
        if not spool.waiting() and spool.in_flight:
            spool.open(create=False)  # only unsettled ones are left: the source reconnects
    done = sorted(p.name for p in (tmp_path / "done").iterdir())
    rejected = sorted(p.name for p in (tmp_path / "rejected").iterdir())
    assert sorted(done + rejected) == names
    assert done == sorted(n for n, o in settled.items() if o is Outcome.DONE)
    assert all((tmp_path / "done" / n).read_bytes() == n.encode() for n in done)


# ---------------------------------------------------------------- the sink's writes


def test_write_file_writes_payload_and_sidecar_without_leftovers(tmp_path: Path) -> None:
    assert write_file(tmp_path, "out.bin", b"\x00data", {"A": ["1", "2"]}, overwrite=False)
    assert (tmp_path / "out.bin").read_bytes() == b"\x00data"
    assert json.loads((tmp_path / ("out.bin" + SIDECAR)).read_text()) == {"A": ["1", "2"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "out.bin" + SIDECAR]


def test_write_file_again_with_the_same_content_is_a_redelivery(tmp_path: Path) -> None:
    assert write_file(tmp_path, "m", b"same", {}, overwrite=False)
    assert not write_file(tmp_path, "m", b"same", {}, overwrite=False)
    with pytest.raises(FileExistsError):
        write_file(tmp_path, "m", b"other", {}, overwrite=False)
    assert (tmp_path / "m").read_bytes() == b"same"


def test_overwrite_replaces_the_file_and_drops_its_old_headers(tmp_path: Path) -> None:
    write_file(tmp_path, "state", b"v1", {"A": ["1"]}, overwrite=True)
    write_file(tmp_path, "state", b"v2", {}, overwrite=True)
    assert (tmp_path / "state").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_file(tmp_path, "m", b"data", {}, overwrite=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\0b", ".hidden", "m" + SIDECAR, "x" * (NAME_MAX + 1)]
)
def test_names_that_cannot_be_message_files_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)
    with pytest.raises(ValueError):
        write_file(tmp_path, name, b"", {}, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_the_longest_name_still_fits_with_its_sidecar(tmp_path: Path) -> None:
    name = "x" * NAME_MAX
    assert write_file(tmp_path, name, b"data", {"A": ["1"]}, overwrite=False)


# ---------------------------------------------------------------- patterns

_PIECES = st.text(alphabet="ab.-_ é", max_size=4)


@given(st.lists(_PIECES, min_size=1, max_size=4), st.data())
def test_a_glob_captures_what_its_stars_stand_for(literals: list[str], data: st.DataObject) -> None:
    """Property: the captures of a name, put back into the pattern's stars, give the name."""
    pattern = "*".join(literals)
    captures = [data.draw(_PIECES) for _ in literals[1:]]
    name = literals[0] + "".join(c + lit for c, lit in zip(captures, literals[1:], strict=True))
    match = glob_regex(pattern).fullmatch(name)
    assert match is not None
    rebuilt = literals[0] + "".join(
        c + lit for c, lit in zip(match.groups(), literals[1:], strict=True)
    )
    assert rebuilt == name


def test_a_glob_has_no_character_classes(tmp_path: Path) -> None:
    put(tmp_path, "[ab].txt", b"literal")
    put(tmp_path, "a.txt", b"not matched")
    assert [m.name for m in opened(tmp_path, "[ab].*").take(10)] == ["[ab].txt"]


def test_a_glob_question_mark_is_one_character_and_captures_nothing() -> None:
    regex = glob_regex("order-?-*.json")
    assert regex.fullmatch("order-7-eu.json").groups() == ("eu",)  # type: ignore[union-attr]
    assert regex.fullmatch("order-77-eu.json") is None
