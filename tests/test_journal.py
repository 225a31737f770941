"""Durability of answered predictions in the write queue, on real SQLite files: the journal and its group
commit (MNIST_DURABILITY=disk), the store acknowledgement (store), and a drain that runs out of time
handing its records to the spool (Cassandra's SpooledStore) or writing them late (SQLite)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from service.errors import StoreUnavailable
from service.store.base import PredictionRecord
from service.store.journal import Journal
from service.store.queue import WriteQueue
from service.store.spool import Spool
from service.store.spooled import SpooledStore
from service.store.sqlite import SqliteStore
from tests.test_spooled_store import write_lock_held
from tests.test_store_contract import T0, make_record

REPLAY_TIMEOUT_S = 30


def records(n: int, start: int = 0) -> list[PredictionRecord]:
    return [make_record(T0 + timedelta(milliseconds=start + i)) for i in range(n)]


def journal_rows(directory: Path) -> int:
    total = 0
    for db in directory.glob("journal-*.db"):
        with sqlite3.connect(db) as conn:
            total += conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    return total


def stored_ids(store: SqliteStore) -> set:
    return {r.id for r in store.list(limit=100_000)}


def test_disk_mode_journals_each_answer_before_put_returns_and_forgets_it_once_stored(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    q = WriteQueue(store, maxsize=100, durability="disk", journal_dir=tmp_path / "spool")  # not started
    recs = records(5)
    q.put_many(recs)
    assert journal_rows(tmp_path / "spool") == 5, "on disk (another connection sees them) when put returns"
    assert stored_ids(store) == set()
    q.start()
    assert q.flush(timeout=10)
    assert stored_ids(store) == {r.id for r in recs}
    assert q.journal is not None and q.journal.depth == 0
    q.drain(timeout=10)
    assert not list((tmp_path / "spool").glob("journal-*")), "an empty journal is removed on exit"


def test_concurrent_answers_share_one_fsync_per_group(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 2**30)
    answers, threads_n = 40, 16
    barrier = threading.Barrier(threads_n)

    def answer(n: int) -> None:
        barrier.wait()
        for i in range(answers):
            journal.write(records(2, start=(n * answers + i) * 2))

    threads = [threading.Thread(target=answer, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.depth == answers * threads_n * 2
    assert journal.groups < answers * threads_n, "some commits carried the records of several answers"
    print(f"{answers * threads_n} answers from {threads_n} threads in {journal.groups} commits")
    journal.close()


def test_a_journal_whose_process_is_gone_is_replayed_by_the_next_writer_exactly_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    gone = WriteQueue(store, maxsize=100, durability="disk", journal_dir=tmp_path / "spool")
    recs = records(300)
    gone.put_many(recs)  # answered; the writer never ran (the process is killed now)
    store.record_many(recs[:10])  # some did reach the store before the kill
    assert gone.journal is not None
    gone.journal.file.close(delete=False)  # what the kernel does to a killed process: the flock goes
    later = WriteQueue(store, maxsize=100, journal_dir=tmp_path / "spool").start()  # memory mode replays too
    try:
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while journal_rows(tmp_path / "spool") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_ids(store) == {r.id for r in recs}
        with sqlite3.connect(tmp_path / "p.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 300
        assert not list((tmp_path / "spool").glob("journal-*")), "a replayed journal is removed"
    finally:
        later.drain(timeout=10)


def test_an_outage_of_sqlite_keeps_disk_mode_records_in_the_journal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", busy_timeout_s=0.02)
    q = WriteQueue(
        store, maxsize=100, durability="disk", journal_dir=tmp_path / "spool", retries=2, backoff_s=0.01
    )
    recs = records(4)
    with write_lock_held(tmp_path / "p.db"):
        q.start()
        q.put_many(recs)
        assert q.flush(timeout=10)  # given up on by the writer ...
        assert journal_rows(tmp_path / "spool") == 4  # ... but still in the journal
        q.drain(timeout=1)
    later = WriteQueue(store, maxsize=100, journal_dir=tmp_path / "spool").start()
    deadline = time.monotonic() + REPLAY_TIMEOUT_S
    while stored_ids(store) != {r.id for r in recs} and time.monotonic() < deadline:
        time.sleep(0.05)
    later.drain(timeout=10)
    assert stored_ids(store) == {r.id for r in recs}


def test_store_mode_returns_once_the_store_has_the_records(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    q = WriteQueue(store, maxsize=100, durability="store").start()
    recs = records(3)
    q.put_many(recs)
    assert all(store.get(r.id) is not None for r in recs)
    q.drain(timeout=10)


def test_store_mode_says_503_when_the_store_does_not_acknowledge_in_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", busy_timeout_s=0.05)
    q = WriteQueue(store, maxsize=100, durability="store", ack_timeout_s=0.3, retries=50, backoff_s=0.02)
    q.start()
    rec = make_record(T0)
    with write_lock_held(tmp_path / "p.db"), pytest.raises(StoreUnavailable, match="did not acknowledge"):
        q.put_many([rec])
    assert q.flush(timeout=10)  # still queued: stored once the lock goes
    assert store.get(rec.id) is not None
    q.drain(timeout=10)


def test_a_drain_out_of_time_hands_cassandra_style_records_to_the_spool_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that hangs (a lock held for longer than the drain, as a Cassandra at 100m CPU times out):
    nothing is dropped; the next process on the same spool folder replays it."""
    db, spool_dir = tmp_path / "p.db", tmp_path / "spool"
    SqliteStore(db).close()  # schema first
    spooled = SpooledStore(SqliteStore(db, busy_timeout_s=3.0), Spool(spool_dir, 2**26))
    q = WriteQueue(spooled, maxsize=10_000, batch_size=64).start()
    recs = records(2000)
    with write_lock_held(db):
        for rec in recs:
            q.put(rec)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="service.store.queue"):
            q.drain(timeout=0.5)
        assert time.monotonic() - started < 2.5, "the drain keeps its deadline even with a writer stuck"
        assert "records kept in the spool" in caplog.text
        assert spooled.spool.depth >= len(recs)
        spooled.close()
    later = SpooledStore(SqliteStore(db), Spool(spool_dir, 2**26))
    try:
        assert later.wait_for_replay(REPLAY_TIMEOUT_S)
        assert {r.id for r in later.list(limit=5000)} == {r.id for r in recs}
    finally:
        later.close()


def test_a_drain_out_of_time_with_sqlite_writes_the_rest_after_the_deadline(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    store = SqliteStore(db, busy_timeout_s=5.0)
    q = WriteQueue(store, maxsize=10_000).start()
    recs = records(1000)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)  # released by a timer
    blocker.execute("BEGIN IMMEDIATE")
    for rec in recs:
        q.put(rec)
    release = threading.Timer(1.5, lambda: blocker.execute("ROLLBACK"))
    release.start()
    q.drain(timeout=0.5)
    release.join()
    blocker.close()
    assert stored_ids(store) == {r.id for r in recs}


def test_the_spool_is_replayed_before_exit_when_asked(tmp_path: Path) -> None:
    db, spool_dir = tmp_path / "p.db", tmp_path / "spool"
    spooled = SpooledStore(SqliteStore(db, busy_timeout_s=0.05), Spool(spool_dir, 2**26))
    q = WriteQueue(spooled, maxsize=1000, spool_drain_s=20).start()
    recs = records(50)
    with write_lock_held(db):
        q.put_many(recs)
        assert q.flush(timeout=10)
        assert spooled.spool.depth == 50  # the outage sent them to the spool
    q.drain(timeout=5)  # the store is back: the drain waits for the replay
    assert spooled.spool.depth == 0
    spooled.close()
    assert stored_ids(SqliteStore(db)) == {r.id for r in recs}
