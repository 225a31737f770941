"""The write-behind queue in front of a real SQLite store: batching, overflow, retries, drain on SIGTERM,
and readers that wait for a record on the writer's condition (or a sibling worker's write notice)."""

from __future__ import annotations

import io
import logging
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.store.peers import WriteNotices
from service.store.queue import WriteQueue
from service.store.sqlite import SqliteStore
from tests.support.wait import wait_until
from tests.test_store_contract import T0, make_record


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "p.db")


def test_every_queued_record_is_stored_by_drain(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=1000).start()
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(500)]
    for rec in recs:
        q.put(rec)
    q.drain(timeout=30)
    assert q.depth == 0
    assert q.written == 500
    assert {r.id for r in store.list(limit=1000)} == {r.id for r in recs}


def test_drain_writes_what_a_never_started_queue_holds_and_says_how_many(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=100)
    for i in range(40):
        q.put(make_record(T0 + timedelta(milliseconds=i)))
    assert q.depth == 40
    assert store.list(limit=100) == []
    assert q.drain(timeout=30) == 40
    assert len(store.list(limit=100)) == 40


def test_records_are_written_in_batches_of_up_to_batch_size(store: SqliteStore) -> None:
    writes = "mnist_store_write_duration_seconds_count"
    before = sample(writes, backend="sqlite")
    q = WriteQueue(store, maxsize=1000, batch_size=256)
    for i in range(1000):
        q.put(make_record(T0 + timedelta(milliseconds=i)))
    q.start().drain(timeout=30)
    assert sample(writes, backend="sqlite") - before == 4  # 256 + 256 + 256 + 232
    assert len(store.list(limit=2000)) == 1000


def test_a_full_queue_writes_in_the_caller_counts_and_logs_the_overflow(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    overflow = "mnist_write_queue_overflow_total"
    before = sample(overflow)
    q = WriteQueue(store, maxsize=5)  # not started: the queue fills up
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="service.store.queue"):
        for rec in recs:
            q.put(rec)
    assert sample(overflow) - before == 7
    assert "write queue full" in caplog.text
    assert len(store.list(limit=100)) == 7  # the overflow, stored synchronously
    assert q.pending(recs[0].id) == recs[0]  # still queued, yet findable
    q.drain(timeout=30)
    assert {r.id for r in store.list(limit=100)} == {r.id for r in recs}
    assert q.pending(recs[0].id) is None


def test_the_depth_gauge_follows_the_queue(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=100)
    for i in range(9):
        q.put(make_record(T0 + timedelta(milliseconds=i)))
    assert sample("mnist_write_queue_depth") == 9
    q.drain(timeout=30)
    assert sample("mnist_write_queue_depth") == 0


def test_a_locked_store_is_retried_until_it_takes_the_records(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", busy_timeout_s=0.05)
    errors = "mnist_store_errors_total"
    before = sample(errors, backend="sqlite", operation="write")
    blocker = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    q = WriteQueue(store, maxsize=100, retries=50, backoff_s=0.01, max_backoff_s=0.05).start()
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(20)]
    for rec in recs:
        q.put(rec)
    wait_until(
        lambda: sample(errors, backend="sqlite", operation="write") - before >= 2,
        10,
        "two failed write attempts",
        interval=0.01,
    )
    assert sample(errors, backend="sqlite", operation="write") - before >= 2
    assert q.flush(timeout=0.05) is False
    blocker.execute("ROLLBACK")
    assert q.flush(timeout=10) is True
    q.drain(timeout=10)
    assert {r.id for r in store.list(limit=100)} == {r.id for r in recs}
    blocker.close()


def test_one_unwritable_record_does_not_hold_back_the_others_and_is_logged_with_its_id(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = [make_record(T0 + timedelta(milliseconds=i)) for i in range(10)]
    poison = make_record(extra={"not json": {1, 2}})  # a set cannot be serialised
    q = WriteQueue(store, maxsize=100, retries=2, backoff_s=0.01)
    for rec in [*good[:5], poison, *good[5:]]:
        q.put(rec)
    with caplog.at_level(logging.ERROR, logger="service.store.queue"):
        assert q.drain(timeout=30) == 10
    assert q.failed == 1
    assert str(poison.id) in caplog.text
    assert {r.id for r in store.list(limit=100)} == {r.id for r in good}


def test_puts_from_many_threads_during_drain_are_all_stored(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=50).start()
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(800)]

    def put_all(part: list) -> None:
        for rec in part:
            q.put(rec)

    threads = [threading.Thread(target=put_all, args=(recs[n::8],)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    q.drain(timeout=30)  # puts that arrive after this are written synchronously
    for t in threads:
        t.join()
    assert {r.id for r in store.list(limit=1000)} == {r.id for r in recs}


def waiting(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` in a thread of its own (a request waiting for a record); its result lands in the list."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def test_await_written_returns_once_the_writer_has_stored_the_record(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=100)  # not started yet: the record waits in the queue
    rec = make_record()
    q.put(rec)
    thread, result = waiting(lambda: q.await_written(rec.id, timeout=60))
    assert thread.is_alive() and store.get(rec.id) is None
    started = time.monotonic()
    q.start()
    thread.join(60)
    assert result == [True]
    assert time.monotonic() - started < 30, "woken by the writer, not by the 60 s timeout"
    assert store.get(rec.id) == rec
    q.drain(timeout=10)


def test_await_written_times_out_while_the_record_is_not_stored(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=100)  # never started: nothing writes
    rec = make_record()
    q.put(rec)
    assert q.await_written(rec.id, timeout=0.2) is False
    assert store.get(rec.id) is None
    q.drain(timeout=10)
    assert q.await_written(rec.id, timeout=0.2) is True  # stored by drain


def test_await_written_has_nothing_to_wait_for_on_an_id_the_queue_never_held(store: SqliteStore) -> None:
    q = WriteQueue(store, maxsize=100)
    assert q.await_written(make_record().id, timeout=60) is True


def test_await_written_is_false_for_a_record_given_up_on(store: SqliteStore) -> None:
    poison = make_record(extra={"not json": {1, 2}})  # a set cannot be serialised
    q = WriteQueue(store, maxsize=100, retries=1).start()
    q.put(poison)
    assert q.await_written(poison.id, timeout=30) is False
    assert q.failed == 1
    q.drain(timeout=10)


def test_find_waits_for_a_record_another_worker_has_still_queued(tmp_path: Path) -> None:
    """Two workers of one server (two queues, one database, one spool folder): a read through the second
    returns as soon as the first has stored the record, woken by the first one's write notice."""
    shared = tmp_path / "spool"
    first = WriteQueue(SqliteStore(tmp_path / "p.db"), maxsize=100, notices=WriteNotices(shared))
    second = WriteQueue(SqliteStore(tmp_path / "p.db"), maxsize=100, notices=WriteNotices(shared))
    rec = make_record()
    first.put(rec)  # queued in the first worker only
    thread, result = waiting(lambda: second.find(rec.id, timeout=60))
    assert thread.is_alive()
    started = time.monotonic()
    first.start()
    thread.join(60)
    assert result == [rec]
    assert time.monotonic() - started < 30, "woken by the notice, not by the 60 s timeout"
    assert second.find(make_record().id, timeout=0.2) is None  # an id nobody answered: not found
    first.drain(timeout=10)
    second.drain(timeout=10)
    assert not list(shared.glob("written-*.sock")), "each worker removes its socket at the end"


def test_a_notice_socket_whose_worker_is_gone_is_removed(tmp_path: Path) -> None:
    alive = WriteNotices(tmp_path)
    gone = tmp_path / "written-1-dead.sock"  # bound once, its process killed: nobody reads it
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(gone))
    dead.close()
    try:
        alive.announce()
        assert not gone.exists()
    finally:
        alive.close()


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_drains_the_queues_of_a_running_server(server_factory: Callable[..., Any]) -> None:
    """Records still queued in the workers when SIGTERM arrives all reach the store before the exit."""
    server = server_factory({}, workers=2)
    png = io.BytesIO()
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(png, format="PNG")
    # Another process holds SQLite's write lock, so the records pile up in the workers' queues.
    blocker = sqlite3.connect(server.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(lambda _: post_image(server.url, png.getvalue()), range(60)))
        queued = scrape_value(server.url, "mnist_write_queue_depth")
        assert queued > 0
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the workers are now draining, blocked on the lock
        assert server.proc.poll() is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert server.stop() == 0
    with sqlite3.connect(server.db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM predictions")}
    assert stored == set(ids)
    assert "drained" in server.logs()


def post_image(url: str, png: bytes) -> str:
    response = requests.post(f"{url}/predict", files={"image": ("d.png", png, "image/png")}, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def scrape_value(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
