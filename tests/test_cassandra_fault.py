"""The product promise under a crash: Cassandra is SIGKILLed and restarted while the service takes ~100
predictions/s; no request fails, and afterwards every answered prediction is in Cassandra exactly once.

The outage runs once (module fixture `outage`: a real node killed and restarted, a real gunicorn server
with two workers, a load generator in its own process); each test asserts one thing about it. The figures
go to test-output/cassandra-fault.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from service.data import load_mnist
from tests.conftest import ROOT
from tests.fixtures.cassandra import CassandraNode, start_own_node, stop_own_node, unique_keyspace
from tests.fixtures.server import RunningServer, start_server
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 100  # predictions per second
SECONDS = 20
RECORDS_BEFORE_KILL = 250  # about 2.5 s of load reaches Cassandra before it is killed
NOTICE_TIMEOUT_S = 30  # for the workers to see the node gone
REPLAY_TIMEOUT_S = 180


def metric(server_url: str, name: str) -> float:
    """One unlabelled sample of /metrics (summed over workers by the server)."""
    text = requests.get(f"{server_url}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def bodies(data_dir: Path, count: int = 50) -> str:
    """Real MNIST test digits as /predict JSON bodies, one per line."""
    images = load_mnist(data_dir).test_images[:count].astype(np.float32) / 255.0
    return "\n".join(json.dumps({"pixels": np.round(img, 3).tolist()}) for img in images)


@dataclass
class Outage:
    """What the load generator, the server and Cassandra said during and after the outage."""

    sent: int
    results: list[dict[str, Any]]
    ready: requests.Response  # /readyz while the node was down
    history: requests.Response  # /api/predictions while the node was down
    spool_depth_during: float
    drained: str | None  # None when spool and write queues emptied in time, else what never happened
    replayed: float
    rejected: float
    stored: list[str]  # ids in the predictions table
    in_history: list[str]  # ids in the all-models history scope

    @property
    def answered(self) -> list[str]:
        return [r["id"] for r in self.results if r["status"] == 200]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] != 200]


@pytest.fixture(scope="module")
def killable_node(cassandra_node: CassandraNode) -> Iterator[CassandraNode]:
    """The session's node when this test session started it; else one of this module's own (never kill
    a node somebody else runs)."""
    if cassandra_node.started_here:
        yield cassandra_node
        return
    node = start_own_node("fault-")
    yield node
    stop_own_node(node)


@pytest.fixture(scope="module")
def outage(
    killable_node: CassandraNode,
    mnist_data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    output_dir: Path,
) -> Iterator[Outage]:
    node = killable_node
    keyspace = unique_keyspace("fault")
    url = node.store_url(keyspace)
    init = subprocess.run(
        [str(Path(sys.executable).with_name("mnist")), "db", "init", "--url", url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    work = tmp_path_factory.mktemp("fault")
    server = start_server(work / "server", {"MNIST_STORE_URL": url}, workers=2)
    try:
        yield run_outage(node, keyspace, server, mnist_data_dir, work, output_dir)
    finally:
        server.stop()
        if not node.started_here:
            node.drop_keyspace(keyspace)


def run_outage(
    node: CassandraNode, keyspace: str, server: RunningServer, data_dir: Path, work: Path, output_dir: Path
) -> Outage:
    (work / "bodies.jsonl").write_text(bodies(data_dir))
    out = work / "load.json"
    command = [sys.executable, "-m", "tests.loadgen", f"{server.url}/predict", str(work / "bodies.jsonl")]
    load = subprocess.Popen([*command, str(out), "--rate", str(RATE), "--seconds", str(SECONDS)], cwd=ROOT)
    session = node.session()

    def stored_count() -> int:
        return int(session.execute(f"SELECT COUNT(*) FROM {keyspace}.predictions").one()[0])

    wait_until(lambda: stored_count() >= RECORDS_BEFORE_KILL, 60, "records in Cassandra before the kill")
    killed_at = time.monotonic()
    node.kill()

    def unreachable() -> requests.Response | None:  # requests keep coming; the workers notice the outage
        answer = requests.get(f"{server.url}/readyz", timeout=10)
        return answer if answer.json()["store"].get("cassandra") == "unreachable" else None

    ready = wait_until(unreachable, NOTICE_TIMEOUT_S, "/readyz to report Cassandra unreachable")
    history = requests.get(f"{server.url}/api/predictions?limit=5", timeout=10)
    spool_depth_during = wait_until(
        lambda: metric(server.url, "mnist_spool_depth"), NOTICE_TIMEOUT_S, "records in the spool"
    )
    restart_s = node.start()
    outage_s = time.monotonic() - killed_at

    assert load.wait(timeout=SECONDS + 120) == 0
    summary = json.loads(out.read_text())
    spool_peak = metric(server.url, "mnist_spool_bytes")  # may already be draining; depth is checked below

    drained: str | None = None
    try:  # every spooled record is replayed once Cassandra is back
        wait_until(
            lambda: (
                metric(server.url, "mnist_spool_depth") == 0
                and metric(server.url, "mnist_write_queue_depth") == 0
            ),
            REPLAY_TIMEOUT_S,
            "the spool and the write queues to empty",
            interval=0.5,
        )
    except AssertionError as exc:
        drained = str(exc)

    node.close()  # the node restarted: a fresh admin session rather than one still reconnecting
    session = node.session()
    outcome = Outage(
        sent=summary["sent"],
        results=summary["results"],
        ready=ready,
        history=history,
        spool_depth_during=spool_depth_during,
        drained=drained,
        replayed=metric(server.url, "mnist_spool_replayed_total"),
        rejected=metric(server.url, "mnist_spool_rejected_total"),
        stored=[str(row.id) for row in session.execute(f"SELECT id FROM {keyspace}.predictions")],
        in_history=[
            str(row.id)
            for row in session.execute(f"SELECT scope, hour, id FROM {keyspace}.predictions_by_hour")
            if row.scope == "*"
        ],
    )
    report = {
        "sent": outcome.sent,
        "answered": len(outcome.answered),
        "failed": len(outcome.failed),
        "stored": len(outcome.stored),
        "answered_and_stored": len(set(outcome.answered) & set(outcome.stored)),
        "duplicates": duplicates(outcome),
        "spooled_then_replayed": int(outcome.replayed),
        "spool_rejected": int(outcome.rejected),
        "spool_depth_during_outage": int(spool_depth_during),
        "outage_s": round(outage_s, 1),
        "cassandra_restart_s": round(restart_s, 1),
        "spool_bytes_after_load": int(spool_peak),
        "p99_response_ms": float(np.percentile([r["ms"] for r in outcome.results if r["ms"]], 99)),
    }
    (output_dir / "cassandra-fault.json").write_text(json.dumps(report, indent=2))
    print(f"\nfault test: {report}")
    return outcome


def duplicates(outage: Outage) -> int:
    """Rows beyond one per id, in the table by id and in the history."""
    return len(outage.stored) - len(set(outage.stored)) + len(outage.in_history) - len(set(outage.in_history))


def test_every_request_sent_is_answered(outage: Outage) -> None:
    assert len(outage.answered) == outage.sent == RATE * SECONDS


def test_no_request_fails(outage: Outage) -> None:
    assert outage.failed == [], outage.failed[:5]


def test_every_answer_has_its_own_id(outage: Outage) -> None:
    assert len(set(outage.answered)) == len(outage.answered)


def test_readyz_stays_ready_but_says_degraded_during_the_outage(outage: Outage) -> None:
    assert outage.ready.status_code == 200
    store = outage.ready.json()["store"]
    assert store["status"] == "degraded" and store["cassandra"] == "unreachable", store


def test_history_says_503_store_unavailable_during_the_outage(outage: Outage) -> None:
    assert outage.history.status_code == 503
    assert outage.history.json()["error"]["code"] == "store_unavailable"


def test_records_wait_in_the_spool_during_the_outage(outage: Outage) -> None:
    assert outage.spool_depth_during > 0


def test_the_spool_and_the_write_queues_empty_once_cassandra_is_back(outage: Outage) -> None:
    assert outage.drained is None, outage.drained


def test_the_outage_sent_records_through_the_spool(outage: Outage) -> None:
    assert outage.replayed > 0, "the outage should have sent records through the spool"


def test_the_spool_refuses_nothing(outage: Outage) -> None:
    assert outage.rejected == 0


def test_every_answered_prediction_is_stored(outage: Outage) -> None:
    stored, answered = set(outage.stored), set(outage.answered)
    assert stored == answered, f"missing {len(answered - stored)}, extra {len(stored - answered)}"


def test_every_record_is_stored_exactly_once(outage: Outage) -> None:
    assert duplicates(outage) == 0


def test_every_answered_prediction_is_in_the_history_once(outage: Outage) -> None:
    assert sorted(outage.in_history) == sorted(outage.answered)
