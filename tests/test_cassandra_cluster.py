"""Three real Cassandra nodes (127.0.0.1-3), keyspace at RF=3: one node down, LOCAL_QUORUM carries on.

Run by `make test-cluster` (marker `cluster`), which `make test` calls after the main session so that three
JVMs never start beside the single test node on 2 cores. Uses a running cluster from
`make cassandra-cluster-up`, else starts one (data in var/cassandra-cluster-test) and removes it afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel

from service.store.base import PredictionRecord
from service.store.cassandra.url import CassandraConfig, parse_url
from service.store.factory import spooled_cassandra
from tests.conftest import ROOT, missing
from tests.fixtures.cassandra import port_open, run_script, unique_keyspace

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
PORT = 9042
STATE = ROOT / "var" / "cassandra-cluster-test"


class ThreeNodes:
    """The cluster, and the script's view of it (to stop and start single nodes)."""

    def __init__(self, state: Path | None) -> None:
        self.state = state

    def url(self, keyspace: str) -> str:
        return f"cassandra://{','.join(HOSTS)}:{PORT}/{keyspace}"

    def config(self, keyspace: str, spool: Path) -> CassandraConfig:
        return replace(parse_url(self.url(keyspace)), spool_dir=spool)

    def stop(self, n: int) -> None:
        run_script("stop-node", str(n), state=self.state, timeout=180)

    def start_missing(self) -> None:
        run_script("cluster-up", state=self.state)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThreeNodes]:
    if all(port_open(h, PORT) for h in HOSTS):
        yield ThreeNodes(state=None)  # someone ran `make cassandra-cluster-up`: leave it running
        return
    if port_open(HOSTS[0], PORT):
        missing("the 3-node cluster", "a single node holds 127.0.0.1:9042; run `make cassandra-down` first")
    for tool, package in (("java", "openjdk-17-jre-headless"), ("mvn", "maven")):
        if shutil.which(tool) is None:
            missing(f"{tool} (to run Cassandra)", f"apt-get install {package}")
    shutil.rmtree(STATE, ignore_errors=True)
    nodes = ThreeNodes(state=STATE)
    print("\n" + run_script("cluster-up", state=STATE).strip().splitlines()[-1])
    yield nodes
    run_script("cluster-kill", state=STATE, timeout=300)  # its data is deleted next: no drain needed
    shutil.rmtree(STATE, ignore_errors=True)


def records(n: int, start: datetime) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            id=uuid.uuid4(),
            created=start + timedelta(milliseconds=i),
            model="cnn",
            version="1",
            digit=i % 10,
            confidence=0.5,
            probabilities=(0.5, *([0.5 / 9] * 9)),
            pixels=bytes([i % 256]) * 784,
            latency_ms=1.0,
        )
        for i in range(n)
    ]


def test_rf3_keeps_writing_and_reading_at_local_quorum_with_one_node_down(
    cluster: ThreeNodes, tmp_path: Path
) -> None:
    keyspace = unique_keyspace("cluster")
    init = subprocess.run(
        [str(Path(sys.executable).with_name("mnist")), "db", "init", "--url", cluster.url(keyspace),
         "--replication", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    store = spooled_cassandra(cluster.config(keyspace, tmp_path / "spool"))
    strict = spooled_cassandra(
        replace(cluster.config(keyspace, tmp_path / "spool-all"), write_consistency=ConsistencyLevel.ALL)
    )
    try:
        assert store.inner.config.write_consistency == ConsistencyLevel.LOCAL_QUORUM
        session = store.inner._stmts.session  # type: ignore[union-attr]
        replication = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        ).one()
        assert replication.replication["replication_factor"] == "3"
        assert sorted(str(h.address) for h in session.cluster.metadata.all_hosts() if h.is_up) == list(HOSTS)

        before = records(50, datetime(2026, 6, 1, 12, tzinfo=UTC))
        store.record_many(before)
        assert store.spool.depth == 0

        cluster.stop(3)
        after = records(50, datetime(2026, 6, 1, 13, tzinfo=UTC))
        store.record_many(after)
        for rec in after[:5]:
            store.record(rec)  # again, one by one: still one row each
        assert store.spool.depth == 0, store.last_error  # two of three replicas acknowledged every write
        assert store.health()["status"] == "ok"
        everything = before + after
        assert all(store.get(r.id) == r for r in everything)
        assert [r.id for r in store.list(limit=200)] == [r.id for r in reversed(everything)]
        assert store.set_label(after[0].id, 7)

        # ALL cannot be met with a node down: those writes wait in the spool ...
        extra = records(10, datetime(2026, 6, 1, 14, tzinfo=UTC))
        strict.record_many(extra)
        assert strict.spool.depth == 10 and strict.health()["status"] == "degraded"
        # ... and are replayed when the node is back.
        cluster.start_missing()
        assert strict.wait_for_replay(120), strict.last_error
        assert all(store.get(r.id) == r for r in extra)
    finally:
        strict.close()
        store.close()
