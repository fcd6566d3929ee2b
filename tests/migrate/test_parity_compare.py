"""bridge.migrate.compare: pairing both sides' messages (pure logic, no broker)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from natsbridge.bridge.migrate.compare import Seen, compare, content_digest


def record(partition: int, offset: int, payload: bytes, in_window: bool = True) -> Seen:
    digest = content_digest(b"k", payload, {}, ())
    return Seen(
        group=f"t/{partition}",
        position=offset,
        where=(("topic", "t"), ("partition", partition), ("offset", offset)),
        digest=digest,
        in_window=in_window,
        pair_key=("t", partition, offset),
    )


def copy(seq: int, original: Seen, payload: bytes | None = None) -> Seen:
    digest = original.digest if payload is None else content_digest(b"k", payload, {}, ())
    return Seen(
        group=original.group,
        position=seq,
        where=(("stream", "S"), ("seq", seq)),
        digest=digest,
        in_window=original.in_window,
        pair_key=original.pair_key,
    )


def unkeyed(seq: int, payload: bytes, group: str = "exchange x") -> Seen:
    return Seen(
        group=group,
        position=seq,
        where=(("stream", "S"), ("seq", seq)),
        digest=content_digest(None, payload, {}, ()),
    )


def ledger_entry(entry: int, payload: bytes) -> Seen:
    return Seen(
        group="exchange x",
        position=entry,
        where=(("tap", "ledger"), ("entry", entry)),
        digest=content_digest(None, payload, {}, ()),
    )


offsets = st.lists(st.integers(0, 10_000), min_size=3, max_size=40, unique=True).map(sorted)


@given(offsets, st.data())
def test_a_copy_deleted_below_the_mirrors_reach_is_missing_with_its_coordinates(
    found: list[int], data: st.DataObject
) -> None:
    legacy = [record(0, offset, b"m%d" % offset) for offset in found]
    gone = data.draw(st.integers(0, len(legacy) - 2))  # the last copy stays: reach is past it
    copies = [copy(seq, seen) for seq, seen in enumerate(legacy, 1) if seq - 1 != gone]
    report = compare("m", 60, legacy, copies)
    assert report.missing == [{"topic": "t", "partition": 0, "offset": found[gone]}]
    assert not report.extra and not report.differ and not report.ok
    assert report.counts == {"legacy": {"t/0": len(found)}, "nats": {"t/0": len(found) - 1}}


@given(offsets)
def test_copies_not_made_yet_are_pending_not_missing(found: list[int]) -> None:
    legacy = [record(1, offset, b"x") for offset in found]
    copies = [copy(seq, seen) for seq, seen in enumerate(legacy[:1], 1)]
    report = compare("m", 60, legacy, copies)
    assert report.ok and report.pending == len(found) - 1 and not report.missing


@given(offsets, st.binary(max_size=20))
def test_an_injected_message_is_extra(found: list[int], payload: bytes) -> None:
    legacy = [record(0, offset, b"m%d" % offset) for offset in found]
    copies = [copy(seq, seen) for seq, seen in enumerate(legacy, 1)]
    copies.append(unkeyed(999, b"injected" + payload, group="stream S"))
    report = compare("m", 60, legacy, copies)
    assert report.extra == [{"stream": "S", "seq": 999}] and not report.missing


def test_a_copy_with_other_content_differs_and_a_second_copy_is_a_duplicate() -> None:
    legacy = [record(0, offset, b"m%d" % offset) for offset in range(3)]
    copies = [copy(1, legacy[0]), copy(2, legacy[1], b"changed"), copy(3, legacy[2])]
    copies.append(copy(4, legacy[2]))
    report = compare("m", 60, legacy, copies)
    assert report.differ == [{"legacy": dict(legacy[1].where), "nats": dict(copies[1].where)}]
    assert report.duplicates == 1 and not report.ok


def test_copies_of_records_outside_the_window_are_context_not_extra() -> None:
    before = record(0, 5, b"old", in_window=False)
    legacy = [before, record(0, 6, b"new")]
    report = compare("m", 60, legacy, [copy(1, before), copy(2, legacy[1])])
    assert report.ok and report.counts["legacy"] == {"t/0": 1}
    forged = Seen("t/0", 3, (("seq", 3),), "0" * 32, pair_key=("t", 0, 99))  # beyond the read
    assert compare("m", 60, legacy, [copy(2, legacy[1]), forged]).ok


@given(st.lists(st.binary(max_size=8), min_size=2, max_size=30, unique=True), st.data())
def test_ledger_entries_pair_by_digest_and_a_lost_one_is_missing(
    payloads: list[bytes], data: st.DataObject
) -> None:
    legacy = [ledger_entry(i, payload) for i, payload in enumerate(payloads, 1)]
    gone = data.draw(st.integers(0, len(legacy) - 2))
    copies = [unkeyed(i, p) for i, p in enumerate(payloads, 100) if i - 100 != gone]
    report = compare("m", 60, legacy, copies)
    assert report.missing == [{"tap": "ledger", "entry": gone + 1}] and not report.extra


def test_the_digest_covers_key_payload_and_only_the_chosen_headers() -> None:
    base = content_digest(b"k", b"p", {"a": ["1"], "b": ["2"]}, ["a"])
    assert base == content_digest(b"k", b"p", {"a": ["1"], "b": ["other"]}, ["a"])
    assert base != content_digest(b"k", b"p", {"a": ["2"], "b": ["2"]}, ["a"])
    assert base != content_digest(None, b"p", {"a": ["1"]}, ["a"])
    assert content_digest(b"", b"ab", {}, []) != content_digest(b"a", b"b", {}, [])


def test_unpaired_copies_before_the_first_paired_one_predate_the_tap() -> None:
    legacy = [ledger_entry(1, b"a"), ledger_entry(2, b"b")]
    copies = [unkeyed(10, b"before the tap"), unkeyed(11, b"a"), unkeyed(12, b"injected")]
    copies.append(unkeyed(13, b"b"))
    report = compare("m", 60, legacy, copies)
    assert report.extra == [{"stream": "S", "seq": 12}] and not report.missing
    assert report.counts == {"legacy": {"exchange x": 2}, "nats": {"exchange x": 3}}
