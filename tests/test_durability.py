"""Answered means recorded, on a real gunicorn server:

- MNIST_DURABILITY=disk: a worker SIGKILLed under load, then the whole server SIGKILLed while the store
  (SQLite, write-locked by the test) holds nothing new; restarted on the same folder, every answered id is in
  the store exactly once.
- memory (the default) with Cassandra stalled (SIGSTOP): SIGTERM's drain runs out of time; what the store
  did not take is kept in the spool and the next server on the same spool folder writes it to Cassandra.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.fixtures.cassandra import CassandraNode, start_own_node, stop_own_node, unique_keyspace
from tests.fixtures.server import RunningServer, start_server
from tests.service_support import Digit, digits
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 30
CLIENTS = 8
IMAGES_PER_REQUEST = 4
REPLAY_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, IMAGES_PER_REQUEST, start=900)


class Load:
    """Client threads posting until stopped; keeps the ids of every answered prediction."""

    def __init__(self, url: str, body: dict) -> None:
        self.url, self.body = url, body
        self.answered: list[str] = []
        self.statuses: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with requests.Session() as session:
            deadline = time.monotonic() + 300  # bounded, whatever the test does
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    r = session.post(f"{self.url}/predict", json=self.body, timeout=TIMEOUT)
                except requests.RequestException as exc:  # a killed worker's connection, a stopped server
                    self.statuses[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                self.statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    self.answered.extend(p["id"] for p in r.json())

    def wait_for(self, n: int, timeout: float = 60) -> None:
        wait_until(lambda: len(self.answered) >= n, timeout, f"{n} answered predictions")

    @contextmanager
    def running(self) -> Iterator[Load]:
        for t in self._threads:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in self._threads:
                t.join(TIMEOUT)


def workers_of(server: RunningServer) -> list[int]:
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def journal_rows(spool: Path) -> int:
    total = 0
    for db in spool.glob("journal-*.db"):
        with sqlite3.connect(db) as conn:
            total += conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    return total


def stored(db: Path) -> Counter[str]:
    with sqlite3.connect(db) as conn:
        return Counter(row[0] for row in conn.execute("SELECT id FROM predictions"))


def test_disk_mode_loses_no_answer_when_a_worker_and_then_the_whole_server_are_killed(
    tmp_path: Path, sample: list[Digit]
) -> None:
    workdir = tmp_path / "server"
    env = {"MNIST_DURABILITY": "disk"}
    server = start_server(workdir, env, workers=2)
    load = Load(server.url, {"pixels": [d.unit for d in sample]})
    with load.running():
        load.wait_for(400)
        victim = workers_of(server)[0]
        os.kill(victim, signal.SIGKILL)  # an OOM kill: no drain, no exit hook
        wait_until(lambda: victim not in workers_of(server) and len(workers_of(server)) == 2, 60,
                   "gunicorn to replace the killed worker")  # fmt: skip
        answered_before_lock = len(load.answered)
        load.wait_for(answered_before_lock + 400)
        # The store stops taking writes (another process holds SQLite's lock): answers go on, their records
        # wait in the write queues and the journals.
        blocker = sqlite3.connect(server.db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        locked_at = len(load.answered)
        load.wait_for(locked_at + 400)
        for pid in [*workers_of(server), server.proc.pid]:  # the whole server: a node loss
            os.kill(pid, signal.SIGKILL)
        server.proc.wait(30)
    blocker.execute("ROLLBACK")
    blocker.close()
    answered = set(load.answered)
    waiting = journal_rows(workdir / "spool")
    assert waiting > 0, "records answered while the store was locked must be in the journals"
    missing_before = answered - set(stored(server.db_path))
    assert missing_before, "the kill must have caught answered records outside the store"

    restarted = start_server(workdir, env, workers=2)
    try:
        wait_until(lambda: answered <= set(stored(server.db_path)), REPLAY_TIMEOUT_S,
                   "every answered id in the store after the restart")  # fmt: skip
        counts = stored(server.db_path)
        assert all(counts[i] == 1 for i in answered)
        wait_until(lambda: journal_rows(workdir / "spool") == 0, 30, "the replayed journals to empty")
        assert "replayed" in restarted.logs()
    finally:
        restarted.stop()
    print(
        f"{len(answered)} answered ({dict(load.statuses)}); {len(missing_before)} not in the store at the "
        f"kill, {waiting} in the journals; all stored exactly once after the restart"
    )


@pytest.fixture(scope="module")
def stoppable_node(cassandra_node: CassandraNode) -> Iterator[CassandraNode]:
    """The session's node when this session started it, else one of this module's own: a node somebody
    else runs is never stopped."""
    if cassandra_node.started_here:
        yield cassandra_node
        return
    node = start_own_node("durable-")
    yield node
    stop_own_node(node)


def cassandra_pid(node: CassandraNode) -> int:
    assert node.state is not None
    return int((node.state / "single" / "cassandra.pid").read_text())


def test_sigterm_with_cassandra_stalled_keeps_what_it_could_not_store_in_the_spool_for_the_next_start(
    stoppable_node: CassandraNode, tmp_path: Path, sample: list[Digit]
) -> None:
    node = stoppable_node
    keyspace = unique_keyspace("durable")
    url = node.store_url(keyspace, timeout="10")  # a stalled node: writes hang past the drain
    mnist = Path(sys.executable).with_name("mnist")
    init = subprocess.run([str(mnist), "db", "init", "--url", url], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert init.returncode == 0, init.stderr
    workdir = tmp_path / "server"
    env = {"MNIST_STORE_URL": url, "MNIST_GRACEFUL_TIMEOUT_S": "4"}
    server = start_server(workdir, env, workers=2)
    pid = cassandra_pid(node)
    load = Load(server.url, {"pixels": [d.unit for d in sample]})
    try:
        with load.running():
            load.wait_for(400)
            os.kill(pid, signal.SIGSTOP)  # Cassandra stops answering, connections stay open
            stalled_at = len(load.answered)
            load.wait_for(stalled_at + 400)
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 0, server.logs()[-3000:]
    assert "records kept in the spool" in server.logs(), server.logs()[-3000:]
    answered = set(load.answered)

    def in_cassandra() -> set[str]:
        rows = node.session().execute(f"SELECT id FROM {keyspace}.predictions", timeout=60)
        return {str(r.id) for r in rows}

    restarted = start_server(workdir, env, workers=2)  # the same spool folder
    try:
        wait_until(lambda: answered <= in_cassandra(), REPLAY_TIMEOUT_S,
                   "every answered id in Cassandra after the restart", interval=2)  # fmt: skip
    finally:
        restarted.stop()
        if not node.started_here:
            node.drop_keyspace(keyspace)
    print(f"{len(answered)} answered ({dict(load.statuses)}), {len(answered) - stalled_at} while stalled")
