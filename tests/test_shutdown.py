"""No record is lost: SIGTERM drains the write queues, and a full queue writes instead of dropping."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.service_support import Digit, digits, metric, metric_samples

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 30
CLIENTS = 12
IMAGES_PER_REQUEST = 16


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, IMAGES_PER_REQUEST, start=400)


def _stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM predictions")}


def _flood(url: str, body: dict, stop: threading.Event, answered: list[str], errors: list[str]) -> None:
    """Post until told to stop or the server goes away; keep the ids of every answered prediction."""
    with requests.Session() as session:
        while not stop.is_set():
            try:
                r = session.post(f"{url}/predict", json=body, timeout=TIMEOUT)
            except requests.RequestException as exc:
                errors.append(type(exc).__name__)
                return  # the server stopped listening: SIGTERM
            if r.status_code == 200:
                answered.extend(p["id"] for p in r.json())
            else:
                errors.append(f"HTTP {r.status_code}")


def test_sigterm_under_load_drains_every_queued_record_into_the_store(
    server_factory, sample: list[Digit]
) -> None:
    server = server_factory(workers=2)
    body = {"pixels": [d.unit for d in sample]}
    stop = threading.Event()
    answered: list[str] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_flood, args=(server.url, body, stop, answered, errors))
        for _ in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(answered) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)  # while requests are in flight
    code = server.proc.wait(60)
    stop.set()
    for t in threads:
        t.join(TIMEOUT)

    assert code == 0, server.logs()[-3000:]
    assert len(answered) >= 2000
    assert not [e for e in errors if e.startswith("HTTP")], errors
    stored = _stored_ids(server.db_path)
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions were not stored"
    exits = [json.loads(line) for line in server.logs().splitlines() if '"drained"' in line]
    assert len(exits) == 2, "each worker logs its drain on exit"
    assert all(e["left"] == 0 for e in exits), exits


def test_a_full_write_queue_still_answers_and_stores_every_record(
    server_factory, sample: list[Digit]
) -> None:
    server = server_factory({"MNIST_WRITE_QUEUE_SIZE": "1"}, workers=1)
    body = {"pixels": [d.unit for d in sample]}
    answered: list[str] = []
    for _ in range(20):
        r = requests.post(f"{server.url}/predict", json=body, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        answered += [p["id"] for p in r.json()]
    overflow = metric(metric_samples(server.url), "mnist_write_queue_overflow_total")
    assert overflow > 0, "16 records per request cannot fit a queue of 1"
    assert "write queue full" in server.logs()
    assert server.stop() == 0
    assert set(answered) <= _stored_ids(server.db_path)
