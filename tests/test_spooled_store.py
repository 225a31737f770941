"""SpooledStore works with any inner store: here SQLite, with a real outage (another process holds the
database's write lock, so SqliteStore raises StoreUnavailable). The Cassandra outages are in
tests/test_cassandra_store.py (an unreachable port, an unmeetable consistency) and test_cassandra_fault.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from service.errors import StoreUnavailable
from service.store.base import Store
from service.store.spool import Spool
from service.store.spooled import SpooledStore
from service.store.sqlite import SqliteStore
from tests.test_store_contract import T0, make_record

REPLAY_TIMEOUT_S = 30


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds SQLite's write lock: every write of the store fails after busy_timeout."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def spooled_sqlite(tmp_path: Path) -> SpooledStore[SqliteStore]:
    return SpooledStore(SqliteStore(tmp_path / "p.db", busy_timeout_s=0.05), Spool(tmp_path / "spool", 2**20))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpooledStore[SqliteStore]]:
    spooled = spooled_sqlite(tmp_path)
    yield spooled
    spooled.close()


def test_a_spooled_store_is_a_store_with_the_inner_backend(store: SpooledStore[SqliteStore]) -> None:
    assert isinstance(store, Store)
    assert store.backend == "sqlite"


def test_writes_during_an_outage_go_to_the_spool_and_are_replayed_in_order(
    store: SpooledStore[SqliteStore], tmp_path: Path
) -> None:
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(20)]
    with write_lock_held(tmp_path / "p.db"):
        store.record_many(recs[:10])  # does not raise
        for rec in recs[10:]:
            store.record(rec)
        assert store.spool.depth == 20
        assert "locked" in str(store.last_error)
        health = store.health()
        assert health["ok"] is True and health["status"] == "degraded" and health["spool_depth"] == 20
        assert store.get(recs[0].id) is None  # still in the spool: found once replayed
    assert store.wait_for_replay(REPLAY_TIMEOUT_S)
    assert [r.id for r in store.list(limit=50)] == [r.id for r in reversed(recs)]
    assert store.health()["status"] == "ok"


def test_records_arriving_while_the_spool_drains_join_it_behind_the_others(
    store: SpooledStore[SqliteStore], tmp_path: Path
) -> None:
    first = make_record(T0)
    with write_lock_held(tmp_path / "p.db"):
        store.record(first)
        later = make_record(T0 + timedelta(seconds=1))
        store.record(later)  # the store would take it now, but the spool still holds `first`
        assert store.spool.depth == 2
    assert store.wait_for_replay(REPLAY_TIMEOUT_S)
    assert [r.id for r in store.list(limit=5)] == [later.id, first.id]


def test_the_spool_outlives_the_process_and_the_next_one_replays_it(tmp_path: Path) -> None:
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(5)]
    gone = spooled_sqlite(tmp_path)
    with write_lock_held(tmp_path / "p.db"):
        gone.record_many(recs)
        assert gone.spool.depth == 5
        gone.close()  # the records stay on disk, in a spool file nobody holds
    later = spooled_sqlite(tmp_path)
    try:
        assert later.spool.depth == 5  # adopted at start
        assert later.wait_for_replay(REPLAY_TIMEOUT_S)
        assert {r.id for r in later.list(limit=10)} == {r.id for r in recs}
    finally:
        later.close()
    assert not list((tmp_path / "spool").glob("spool-*")), "replayed spool files are removed"


def test_a_record_that_cannot_be_stored_is_not_an_outage_and_is_not_spooled(
    store: SpooledStore[SqliteStore],
) -> None:
    poison = make_record(extra={"not json": {1, 2}})  # a set cannot be serialised
    with pytest.raises(TypeError):
        store.record(poison)
    assert store.spool.depth == 0


def test_reads_during_an_outage_say_503_and_name_the_spool(tmp_path: Path) -> None:
    store = spooled_sqlite(tmp_path)
    rec = make_record()
    store.record(rec)
    store.inner.close()  # the inner store is gone: reads cannot be answered
    try:
        with pytest.raises(StoreUnavailable, match="local spool"):
            store.get(rec.id)
        with pytest.raises(StoreUnavailable, match="local spool"):
            store.list(limit=5)
    finally:
        store.close()
