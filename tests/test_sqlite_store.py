"""What only the SQLite backend promises: the file, WAL, URL forms, sharing by threads and processes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from service.settings import Settings
from service.store.factory import UnsupportedStore, open_store, sqlite_path
from service.store.sqlite import SqliteStore
from tests.test_store_contract import T0, make_record


def test_relative_and_absolute_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///var/predictions.db") == Path("var/predictions.db")
    assert sqlite_path("sqlite:////srv/mnist/predictions.db") == Path("/srv/mnist/predictions.db")


@pytest.mark.parametrize("url", ["sqlite://host/p.db", "sqlite:///", "redis://localhost/0", "predictions.db"])
def test_unusable_store_urls_are_refused_with_the_reason(url: str) -> None:
    with pytest.raises(UnsupportedStore, match="sqlite"):
        open_store(Settings(store_url=url))


def test_open_store_creates_the_file_and_its_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "predictions.db"
    store = open_store(Settings(store_url=f"sqlite:///{path}"))
    store.record(make_record())
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 1


def test_reopening_keeps_the_records(tmp_path: Path) -> None:
    rec = make_record(digit=4)
    first = SqliteStore(tmp_path / "p.db")
    first.record(rec)
    first.close()
    second = SqliteStore(tmp_path / "p.db")
    assert second.get(rec.id) == rec
    second.close()


def test_labelled_streams_more_records_than_one_chunk_in_time_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    recs = [make_record(T0 + timedelta(milliseconds=i), label=i % 10) for i in range(1234)]
    store.record_many(reversed(recs))
    assert [r.id for r in store.labelled()] == [r.id for r in recs]
    store.close()


def test_health_is_down_once_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    store.close()
    health = store.health()
    assert health["ok"] is False
    assert health["status"] == "down"


def test_threads_write_and_read_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                rec = make_record(T0 + timedelta(seconds=n, milliseconds=i), digit=n)
                store.record(rec)
                assert store.get(rec.id) == rec
                store.list(limit=5, digit=n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list(limit=1000)) == 400
    store.close()


def _write_from_process(path: str, n: int) -> None:
    store = SqliteStore(Path(path))
    for start in range(0, 300, 30):
        store.record_many(
            make_record(T0 + timedelta(seconds=n, milliseconds=i), digit=n) for i in range(start, start + 30)
        )
    store.close()


def test_processes_share_one_file_without_losing_writes(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(str(path), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = SqliteStore(path)
    for n in range(4):
        assert len(store.list(limit=1000, digit=n)) == 300
    store.close()


def _open_at_once(path: str, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait(30)
    SqliteStore(Path(path)).close()


def test_processes_opening_a_brand_new_file_at_once_all_start(tmp_path: Path) -> None:
    """gunicorn's workers open the same new file at the same moment: none may fail ("database is locked"
    from the switch to WAL once failed a worker's boot, which halts gunicorn)."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(10):
        path = tmp_path / f"new-{attempt}.db"
        start = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_at_once, args=(str(path), start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6, f"attempt {attempt}"
        assert SqliteStore(path).list(limit=1) == []


def test_a_locked_database_makes_writes_wait_then_fail_after_the_busy_timeout(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", busy_timeout_s=0.1)
    blocker = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.record(make_record())
    assert store.health()["status"] == "down"
    blocker.execute("ROLLBACK")
    store.record(make_record())
    assert store.health()["ok"] is True
    blocker.close()
    store.close()
