"""Unit tests of the synchronous store: streams, limits, dedup, consumers, dead letters."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from natsbridge.bridge.broker import store as store_module
from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    Discard,
    Outgoing,
    PubAck,
    Retention,
    StreamConfig,
)
from natsbridge.bridge.broker.store import DB_NAME, Store
from natsbridge.bridge.errors import NotFound, PayloadTooLarge, StoreError, StreamFull, SubjectError
from natsbridge.mappings.headers import (
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DELIVERIES,
    BRIDGE_REASON,
)

from .conftest import FakeClock, OpenStore, crash, work_queue


def seqs(
    store: Store, stream: str = "orders", consumer: str = "deliver", batch: int = 100
) -> list[int]:
    return [row[0] for row in store.fetch(stream, consumer, batch).messages]


# ---------------------------------------------------------------------- publish


def test_publish_assigns_sequences_and_keeps_everything(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    ack = store.publish("orders", "orders.eu.created", b"one", {"X-Id": ["1", "2"]}, msg_id="m1")
    assert ack == PubAck("orders", 1)
    assert store.publish("orders", "any string at all/ok", b"two").seq == 2
    store.commit()
    [row1, row2] = store.fetch("orders", "deliver", 10).messages
    seq, ts_ns, subject, msg_id, _headers, payload, deliveries = row1
    assert (seq, subject, msg_id, payload, deliveries) == (1, "orders.eu.created", "m1", b"one", 1)
    assert ts_ns == FakeClock().wall_ns
    stored = store.get_message("orders", 1)
    assert stored is not None and stored.headers == {"X-Id": ["1", "2"]}
    assert row2[2] == "any string at all/ok"


def test_sequences_are_never_reused(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"1")
    store.commit()
    for row in store.fetch("orders", "deliver", 10).messages:
        store.ack("orders", "deliver", row[0])
    store.commit()
    store.close()
    store = open_store()
    assert store.stream_info("orders").messages == 0
    assert store.publish("orders", "s", b"2").seq == 2


def test_stream_subjects_filter_publishes_and_route_by_subject(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="orders", subjects=("orders.>",)))
    assert store.publish("orders", "orders.eu.new", b"x").seq == 1
    with pytest.raises(SubjectError, match="matches none"):
        store.publish("orders", "billing.new", b"x")


def test_unknown_stream_and_consumer(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(NotFound):
        store.publish("nope", "s", b"")
    work_queue(store)
    with pytest.raises(NotFound):
        store.fetch("orders", "nope", 1)


def test_payload_limit(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store, max_msg_size=4)
    store.publish("orders", "s", b"1234")
    with pytest.raises(PayloadTooLarge) as info:
        store.publish("orders", "s", b"12345")
    assert (info.value.size, info.value.limit) == (5, 4)
    assert store.stream_info("orders").messages == 1


# ---------------------------------------------------------------------- dedup


def test_duplicate_window(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, duplicate_window=60.0)
    first = store.publish("orders", "s", b"a", msg_id="id-1")
    again = store.publish("orders", "s", b"a", msg_id="id-1")
    assert again == PubAck("orders", first.seq, duplicate=True)
    assert store.stream_info("orders").messages == 1
    clock.advance(61)
    later = store.publish("orders", "s", b"a", msg_id="id-1")
    assert not later.duplicate and later.seq == 2


def test_duplicate_window_survives_ack_and_restart(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, duplicate_window=60.0)
    store.publish("orders", "s", b"a", msg_id="id-1")
    store.commit()
    for seq in seqs(store):
        store.ack("orders", "deliver", seq)
    store.commit()
    store.close()
    clock.advance(30)
    store = open_store()
    assert store.stream_info("orders").messages == 0  # acked and deleted...
    assert store.publish("orders", "s", b"a", msg_id="id-1") == PubAck(
        "orders", 1, True
    )  # ...and known


def test_dedup_entries_are_pruned(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, duplicate_window=10.0)
    for i in range(5):
        store.publish("orders", "s", b"a", msg_id=f"id-{i}")
    store.commit()
    clock.advance(11)
    store.maintain(idle=True)
    store.commit()
    assert store._conn.execute("SELECT count(*) FROM dedup").fetchone()[0] == 0


def test_publish_many_is_all_or_nothing_and_dedups_within(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store, max_msg_size=3)
    acks = store.publish_many(
        "orders",
        [Outgoing("s", b"a", msg_id="x"), Outgoing("s", b"b"), Outgoing("s", b"c", msg_id="x")],
    )
    assert acks == [PubAck("orders", 1), PubAck("orders", 2), PubAck("orders", 1, True)]
    with pytest.raises(PayloadTooLarge):
        store.publish_many("orders", [Outgoing("s", b"ok"), Outgoing("s", b"toolong")])
    assert store.stream_info("orders").messages == 2


# ---------------------------------------------------------------------- limits


def test_max_msgs_discard_old_evicts_oldest(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="s", max_msgs=3))
    for i in range(5):
        store.publish("s", "x", bytes([i]))
    store.commit()
    info = store.stream_info("s")
    assert (info.messages, info.first_seq, info.last_seq) == (3, 3, 5)
    assert [m.payload for m in store.messages("s")] == [b"\x02", b"\x03", b"\x04"]


def test_max_bytes_discard_old(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="s", max_bytes=35))  # subject 1 + payload 10 = 11 each
    for i in range(5):
        store.publish("s", "x", bytes([i]) * 10)
    store.commit()
    info = store.stream_info("s")
    assert (info.messages, info.bytes, info.first_seq) == (3, 33, 3)


def test_discard_new_raises_stream_full(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store, max_msgs=2, discard=Discard.NEW)
    store.publish("orders", "s", b"1")
    store.publish("orders", "s", b"2")
    with pytest.raises(StreamFull, match="discard policy is 'new'"):
        store.publish("orders", "s", b"3")
    with pytest.raises(StreamFull):
        store.publish_many("orders", [Outgoing("s", b"3")])
    store.commit()
    store.ack("orders", "deliver", seqs(store)[0])  # a work queue frees room on ack
    assert store.publish("orders", "s", b"3").seq == 3


def test_max_age_expires_in_maintenance(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="s", max_age=10.0))
    store.publish("s", "x", b"old")
    clock.advance(8)
    store.publish("s", "x", b"new")
    store.commit()
    clock.advance(5)
    store.maintain(idle=False)
    store.commit()
    assert [m.payload for m in store.messages("s")] == [b"new"]
    assert store.stream_info("s").messages == 1


def test_lowering_a_limit_applies_at_once(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="s"))
    for _ in range(10):
        store.publish("s", "x", b"p")
    store.add_stream(StreamConfig(name="s", max_msgs=4))
    store.commit()
    assert store.stream_info("s").messages == 4


def test_retention_cannot_change(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="s"))
    with pytest.raises(StoreError, match="retention cannot change"):
        store.add_stream(StreamConfig(name="s", retention=Retention.WORKQUEUE))


# ---------------------------------------------------------------------- consumers


def test_work_queue_ack_deletes_and_unacked_come_back(
    open_store: OpenStore, clock: FakeClock
) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", ack_wait=5.0))
    for i in range(4):
        store.publish("orders", "s", bytes([i]))
    store.commit()
    assert seqs(store, batch=3) == [1, 2, 3]
    store.ack("orders", "deliver", 2)
    store.commit()
    info = store.consumer_info("orders", "deliver")
    assert (info.num_pending, info.num_ack_pending, info.ack_floor, info.delivered) == (1, 2, 0, 3)
    assert store.stream_info("orders").messages == 3
    assert seqs(store) == [4]
    clock.advance(5)
    rows = store.fetch("orders", "deliver", 10).messages
    assert [(r[0], r[-1]) for r in rows] == [(1, 2), (3, 2), (4, 2)]
    assert store.consumer_info("orders", "deliver").num_redelivered == 3


def test_second_consumer_on_work_queue_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    with pytest.raises(StoreError, match="one consumer"):
        store.add_consumer("orders", ConsumerConfig(name="other"))


def test_backoff_sets_the_wait_per_delivery(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", backoff=(1.0, 10.0)))
    store.publish("orders", "s", b"x")
    store.commit()
    assert seqs(store) == [1]
    clock.advance(1)
    assert seqs(store) == [1]  # second delivery; now waits 10 s
    clock.advance(9)
    assert seqs(store) == []
    clock.advance(1)
    assert seqs(store) == [1]


def test_nak_with_delay_and_in_progress(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", ack_wait=5.0))
    store.publish("orders", "s", b"a")
    store.publish("orders", "s", b"b")
    store.commit()
    assert seqs(store) == [1, 2]
    store.nak("orders", "deliver", 1)
    store.nak("orders", "deliver", 2, delay=3.0)
    assert seqs(store) == [1]
    clock.advance(3)
    assert seqs(store) == [2]
    clock.advance(4)  # +7 s: 2 (redelivered at +3 s) is due at +8 s
    store.in_progress("orders", "deliver", 2)  # now due at +12 s
    clock.advance(1.5)
    assert seqs(store) == [1]  # 1 was redelivered at +0 s: due since +5 s
    clock.advance(3)
    assert seqs(store) == []
    clock.advance(0.5)
    assert seqs(store) == [2]


def test_max_deliver_dead_letters_with_coordinates(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", ack_wait=1.0, max_deliver=2))
    store.publish("orders", "orders.eu", b"poison", {"X-Trace": ["t1"]}, msg_id="m-1")
    store.commit()
    assert seqs(store) == [1]
    clock.advance(1)
    assert seqs(store) == [1]
    clock.advance(1)
    assert seqs(store) == []
    store.commit()
    assert store.stream_info("orders").messages == 0
    [dead] = store.messages("orders.dlq")
    assert (dead.subject, dead.payload, dead.msg_id) == ("orders.eu", b"poison", "m-1")
    assert dead.headers == {
        "X-Trace": ["t1"],
        BRIDGE_REASON: ["max_deliver"],
        BRIDGE_DEAD_LETTER_STREAM: ["orders"],
        BRIDGE_DEAD_LETTER_SEQ: ["1"],
        BRIDGE_DELIVERIES: ["2"],
    }
    assert store.consumer_info("orders", "deliver").num_dead_lettered == 1


def test_term_dead_letters_with_reason(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"bad")
    store.publish("orders", "s", b"good")
    store.commit()
    assert seqs(store) == [1, 2]
    store.term("orders", "deliver", 1, "rejected by RabbitMQ: NOT_FOUND")
    store.ack("orders", "deliver", 2)
    store.commit()
    [dead] = store.messages("orders.dlq")
    assert dead.headers[BRIDGE_REASON] == ["rejected by RabbitMQ: NOT_FOUND"]
    assert store.stream_info("orders").messages == 0
    info = store.consumer_info("orders", "deliver")
    assert (info.ack_floor, info.num_dead_lettered) == (2, 1)


def test_direct_dead_letter(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    ack = store.dead_letter("orders", "amqp.rk", b"raw", {"A": ["1"]}, "cannot map")
    assert ack.stream == "orders.dlq"
    [dead] = store.messages("orders.dlq")
    assert dead.headers == {
        "A": ["1"],
        BRIDGE_REASON: ["cannot map"],
        BRIDGE_DEAD_LETTER_STREAM: ["orders"],
    }
    store.add_stream(StreamConfig(name="plain"))
    with pytest.raises(StoreError, match="no dead-letter stream"):
        store.dead_letter("plain", "s", b"", None, "x")


def test_replay_moves_dead_letters_back(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"x", {"H": ["v"]})
    store.commit()
    seqs(store)
    store.term("orders", "deliver", 1, "sink down")
    store.dead_letter("orders", "s", b"unmapped", None, "cannot map")  # never buffered
    store.commit()
    moved = store.replay("orders.dlq")
    store.commit()
    assert moved == [PubAck("orders", 2)]
    [again] = store.fetch("orders", "deliver", 10).messages
    assert (again[0], again[5]) == (2, b"x")
    stored = store.get_message("orders", 2)
    assert stored is not None and stored.headers == {"H": ["v"]}
    assert [m.payload for m in store.messages("orders.dlq")] == [b"unmapped"]


def test_ordered_consumer_has_one_in_flight(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", ordered=True, ack_wait=5.0))
    for i in range(3):
        store.publish("orders", "s", bytes([i]))
    store.commit()
    assert seqs(store, batch=10) == [1]
    assert seqs(store, batch=10) == []
    store.nak("orders", "deliver", 1)
    assert seqs(store, batch=10) == [1]
    store.ack("orders", "deliver", 1)
    assert seqs(store, batch=10) == [2]


def test_max_ack_pending(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", max_ack_pending=2))
    for _ in range(5):
        store.publish("orders", "s", b"")
    store.commit()
    assert seqs(store, batch=10) == [1, 2]
    assert seqs(store, batch=10) == []
    store.ack("orders", "deliver", 1)
    assert seqs(store, batch=10) == [3]


def test_filtered_consumers_on_limits_stream(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="events"))
    store.add_consumer("events", ConsumerConfig(name="eu", filter_subject="events.eu.*"))
    store.add_consumer("events", ConsumerConfig(name="all"))
    for subject in ("events.eu.a", "events.us.a", "events.eu.b", "events.eu.b.c"):
        store.publish("events", subject, b"")
    store.commit()
    assert store.consumer_info("events", "eu").num_pending == 2
    assert seqs(store, "events", "eu") == [1, 3]
    assert seqs(store, "events", "all") == [1, 2, 3, 4]
    store.publish("events", "events.eu.z", b"")
    assert seqs(store, "events", "eu") == [5]


def test_limits_retention_acks_survive_restart(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    store.add_stream(StreamConfig(name="log"))
    store.add_consumer("log", ConsumerConfig(name="c"))
    for _ in range(6):
        store.publish("log", "s", b"")
    store.commit()
    assert seqs(store, "log", "c") == [1, 2, 3, 4, 5, 6]
    for seq in (1, 3, 5):
        store.ack("log", "c", seq)
    store.commit()
    info = store.consumer_info("log", "c")
    assert (info.ack_floor, info.num_ack_pending) == (1, 3)
    store.close()
    store = open_store()
    rows = store.fetch("log", "c", 10).messages
    assert [(r[0], r[-1]) for r in rows] == [(2, 2), (4, 2), (6, 2)]
    assert store.stream_info("log").messages == 6  # limits retention keeps acked messages
    for seq in (2, 4, 6):
        store.ack("log", "c", seq)
    store.commit()
    assert store.consumer_info("log", "c").ack_floor == 6
    assert store._conn.execute("SELECT count(*) FROM acks").fetchone()[0] == 0


def test_restart_redelivers_unacked_with_counts(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, consumer=ConsumerConfig(name="deliver", ack_wait=1.0, max_deliver=3))
    for _ in range(3):
        store.publish("orders", "s", b"")
    store.commit()
    assert seqs(store) == [1, 2, 3]
    clock.advance(1)
    assert seqs(store, batch=1) == [1]  # delivery 2 of seq 1
    store.ack("orders", "deliver", 2)
    store.commit()
    crash(store)
    store = open_store()
    rows = store.fetch("orders", "deliver", 10).messages
    assert [(r[0], r[-1]) for r in rows] == [(1, 3), (3, 2)]
    crash(store)  # the fetch above was not committed: counts stay as they were
    store = open_store()
    rows = store.fetch("orders", "deliver", 10).messages
    assert [(r[0], r[-1]) for r in rows] == [(1, 3), (3, 2)]
    store.commit()
    crash(store)
    store = open_store()
    assert [(r[0], r[-1]) for r in store.fetch("orders", "deliver", 10).messages] == [(3, 3)]
    store.commit()
    assert [m.headers[BRIDGE_REASON] for m in store.messages("orders.dlq")] == [["max_deliver"]]


def test_uncommitted_work_is_lost_in_a_crash_and_nothing_else(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"kept")
    store.commit()
    store.publish("orders", "s", b"lost")
    crash(store)
    store = open_store()
    assert [r[5] for r in store.fetch("orders", "deliver", 10).messages] == [b"kept"]
    assert store.stream_info("orders").last_seq == 1


def test_delete_message_and_stream(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    for _ in range(3):
        store.publish("orders", "s", b"abc")
    store.commit()
    assert seqs(store, batch=1) == [1]
    assert store.delete_message("orders", 1)
    assert not store.delete_message("orders", 1)
    info = store.stream_info("orders")
    assert (info.messages, info.bytes, info.consumers[0].num_ack_pending) == (2, 8, 0)
    store.delete_stream("orders")
    store.commit()
    assert store.stream_names() == ["orders.dlq"]
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_info_reports_ages(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"")
    clock.advance(7)
    store.publish("orders", "s", b"")
    clock.advance(3)
    info = store.stream_info("orders")
    assert info.oldest_age == pytest.approx(10.0)
    assert info.consumers[0].oldest_age == pytest.approx(10.0)
    seqs(store, batch=1)
    store.ack("orders", "deliver", 1)
    assert store.consumer_info("orders", "deliver").oldest_age == pytest.approx(3.0)


# ---------------------------------------------------------------------- files


def test_second_writer_is_refused(open_store: OpenStore, tmp_path: Path) -> None:
    open_store()
    with pytest.raises(StoreError, match="in use by another natsbridge process"):
        Store.open(tmp_path)


def test_read_only_open_while_a_writer_runs(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"x")
    store.commit()
    reader = Store.open(tmp_path, read_only=True)
    try:
        assert reader.stream_info("orders").messages == 1
        with pytest.raises(StoreError, match="read-only"):
            reader.publish("orders", "s", b"")
    finally:
        reader.close()


def test_missing_store_read_only(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no buffer database"):
        Store.open(tmp_path, read_only=True)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / DB_NAME).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="not a natsbridge buffer"):
        Store.open(tmp_path)


def test_integrity_check_and_counters(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store)
    store.publish("orders", "s", b"x")
    store.commit()
    assert store.integrity_check() == []
    store._conn.execute("UPDATE streams SET msgs = 5 WHERE name = 'orders'")
    store._streams["orders"].msgs = 5
    assert any("counters say 5 messages" in p for p in store.integrity_check())


def test_incremental_vacuum_returns_space_when_idle(
    open_store: OpenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "VACUUM_MIN_FREE_PAGES", 256)
    monkeypatch.setattr(store_module, "VACUUM_STEP_PAGES", 128)
    store = open_store()
    work_queue(store)
    store.publish_many("orders", [Outgoing("s", b"x" * 4000)] * 3000)
    store.commit()
    while rows := store.fetch("orders", "deliver", 1000).messages:
        for row in rows:
            store.ack("orders", "deliver", row[0])
        store.commit()
    free_before = store._conn.execute("PRAGMA freelist_count").fetchone()[0]
    pages_before = store._conn.execute("PRAGMA page_count").fetchone()[0]
    assert free_before > 1000
    store.maintain(idle=False)  # busy: no reclaiming
    store.commit()
    assert store._conn.execute("PRAGMA freelist_count").fetchone()[0] == free_before
    for _ in range(3):
        clock.advance(2)
        store.maintain(idle=True)  # one small step each time
        store.commit()
    free_after = store._conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free_after == free_before - 3 * 128
    assert store._conn.execute("PRAGMA page_count").fetchone()[0] == pages_before - 3 * 128


def test_publish_each_matches_publish(open_store: OpenStore) -> None:
    store = open_store()
    work_queue(store, max_msg_size=5)
    store.add_stream(StreamConfig(name="typed", subjects=("t.*",), max_msgs=2))
    outcomes = store.publish_each(
        [
            ("orders", "a", b"1", None, None),  # the inlined path
            ("orders", "b", b"22", {"H": ["v"]}, None),  # headers: through publish()
            ("orders", "c", b"333", None, "id"),
            ("orders", "c", b"333", None, "id"),  # duplicate
            ("orders", "d", b"too long", None, None),
            ("nope", "e", b"", None, None),
            ("typed", "t.1", b"", None, None),
            ("typed", "x", b"", None, None),
            ("typed", "t.2", b"", None, None),
            ("typed", "t.3", b"", None, None),  # evicts t.1
            ("orders", "f", b"4444", None, None),
        ]
    )
    assert outcomes[:4] == [
        PubAck("orders", 1),
        PubAck("orders", 2),
        PubAck("orders", 3),
        PubAck("orders", 3, True),
    ]
    assert isinstance(outcomes[4], PayloadTooLarge) and isinstance(outcomes[5], NotFound)
    assert isinstance(outcomes[7], SubjectError)
    assert outcomes[6] == PubAck("typed", 1) and outcomes[9] == PubAck("typed", 3)
    assert outcomes[10] == PubAck("orders", 4)
    store.commit()
    assert [(m.subject, m.payload) for m in store.messages("orders")] == [
        ("a", b"1"),
        ("b", b"22"),
        ("c", b"333"),
        ("f", b"4444"),
    ]
    info = store.stream_info("orders")
    assert (info.messages, info.bytes) == (
        4,
        2 + 3 + len(store_module.encode_headers({"H": ["v"]}) or "") + 4 + 5,
    )
    assert [m.subject for m in store.messages("typed")] == ["t.2", "t.3"]
    assert store.integrity_check() == []


def test_dedup_window_lives_on_disk_not_in_memory(open_store: OpenStore, clock: FakeClock) -> None:
    store = open_store()
    work_queue(store, duplicate_window=60.0)
    for batch in range(5):
        store.publish_each([("orders", "s", b"", None, f"id-{batch}-{i}") for i in range(1000)])
        store.commit()
        assert store._dedup_known == {}  # nothing kept between transactions
    clock.advance(30)
    again = store.publish_each([("orders", "s", b"", None, f"id-{b}-7") for b in range(5)])
    assert all(isinstance(a, PubAck) and a.duplicate for a in again)
    assert store.stream_info("orders").messages == 5000
