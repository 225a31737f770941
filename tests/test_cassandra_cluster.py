"""Three real Cassandra nodes (127.0.0.1-3): keyspace init while the cluster forms, and RF=3 with a node down.

Run by `make test-cluster` (marker `cluster`), which `make test` calls after the main session so that three
JVMs never start beside the single test node on 2 cores. The fresh-start tests come first and start and
kill clusters of their own (data in var/cassandra-cluster-test); the RF=3 test then uses a running cluster
from `make cassandra-cluster-up`, else starts one and removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement

from service.store.base import PredictionRecord
from service.store.cassandra.url import CassandraConfig, parse_url
from service.store.factory import spooled_cassandra
from tests.conftest import ROOT, missing
from tests.fixtures.cassandra import port_open, run_script, unique_keyspace

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
PORT = 9042
STATE = ROOT / "var" / "cassandra-cluster-test"
MNIST = str(Path(sys.executable).with_name("mnist"))
# Fresh 3-node starts in the repeated test: each costs 40-60 s of two loaded cores (three JVMs starting).
FRESH_STARTS = int(os.environ.get("MNIST_CLUSTER_FRESH_STARTS", "10"))


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


def require_tools() -> None:
    for tool, package in (("java", "openjdk-17-jre-headless"), ("mvn", "maven")):
        if shutil.which(tool) is None:
            missing(f"{tool} (to run Cassandra)", f"apt-get install {package}")


def db_init(keyspace: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MNIST, "db", "init", "--url", f"cassandra://{','.join(HOSTS)}:{PORT}/{keyspace}",
         "--replication", "3", "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=timeout + 60, check=False,
    )  # fmt: skip


class FreshClusters:
    """Start a brand-new cluster (no data) again and again; kill it at the end."""

    def start(self, until: str) -> float:
        """`until`: cluster-start (returns once node 1 answers) or cluster-up (once the ring is complete)."""
        run_script("cluster-kill", state=STATE, timeout=300)
        shutil.rmtree(STATE, ignore_errors=True)
        started = time.monotonic()
        run_script(until, state=STATE)
        return time.monotonic() - started

    def coordinated_by(self, host: str) -> Cluster:
        """A driver that sends every statement to `host`: its own view of the ring decides Unavailable."""
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]))
        return Cluster(
            [host], port=PORT, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
        )


@pytest.fixture(scope="module")
def fresh_clusters() -> Iterator[FreshClusters]:
    if any(port_open(h, PORT) for h in HOSTS):
        missing(
            "free addresses 127.0.0.1-3:9042 for fresh clusters",
            "stop the nodes there (make cassandra-cluster-down)",
        )
    require_tools()
    yield FreshClusters()
    run_script("cluster-kill", state=STATE, timeout=300)
    shutil.rmtree(STATE, ignore_errors=True)


def test_init_and_the_store_started_while_nodes_2_and_3_are_still_joining_succeed(
    fresh_clusters: FreshClusters,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seconds = fresh_clusters.start("cluster-start")
    # The service's own first connection, at the same moment: it creates its keyspace (RF 3) itself.
    config = replace(
        parse_url(f"cassandra://{','.join(HOSTS)}:{PORT}/joining_store?replication=3"),
        spool_dir=tmp_path / "spool",
    )
    store = spooled_cassandra(config)
    try:
        early = records(20, datetime(2026, 6, 2, 9, tzinfo=UTC))
        store.record_many(early)  # answered while the cluster forms: kept in the spool
        init = db_init("joining")
        with capsys.disabled():
            print(f"\nnode 1 up in {seconds:.0f}s; db init while 2 and 3 joined took its own course:")
            print("\n".join(f"  {line}" for line in init.stderr.splitlines()))
        assert init.returncode == 0, init.stderr
        # It did meet the race: node 1 alone cannot take a LOCAL_QUORUM write at RF 3.
        assert "waiting for replicas" in init.stderr and "needs 2 live replicas" in init.stderr
        assert "schema version 1 ready in keyspace joining" in init.stderr
        assert store.wait_for_replay(180), store.inner.last_error
        assert all(store.get(r.id) == r for r in early)
        waited = [r.getMessage() for r in caplog.records if "waiting to create it" in r.getMessage()]
        assert waited, "the store never had to wait: the race this test is about did not happen"
    finally:
        store.close()
    run_script("cluster-up", state=STATE)  # now the whole ring: every node has the schema and the row
    for host in HOSTS:
        with fresh_clusters.coordinated_by(host) as driver:
            session = driver.connect()
            row = session.execute(
                SimpleStatement(
                    "SELECT version FROM joining.schema_version WHERE component = 'mnist-service'",
                    consistency_level=ConsistencyLevel.ALL,
                )
            ).one()
            assert row is not None and row.version == 1, host


# Each start + init may take up to ~4 min on a loaded machine; pyproject's 900 s per test would cut it short.
@pytest.mark.timeout(FRESH_STARTS * 300)
def test_fresh_cluster_starts_with_init_never_fail(
    fresh_clusters: FreshClusters, capsys: pytest.CaptureFixture[str]
) -> None:
    """MNIST_CLUSTER_FRESH_STARTS (10) brand-new clusters, init racing the joins each time: 0 failures."""
    failures: list[str] = []
    began = time.monotonic()
    for attempt in range(1, FRESH_STARTS + 1):
        seconds = fresh_clusters.start("cluster-start")
        started = time.monotonic()
        init = db_init(f"fresh_{attempt}")
        line = (
            f"fresh start {attempt}/{FRESH_STARTS}: node 1 up in {seconds:.0f}s, db init "
            f"{'ok' if init.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f}s "
            f"({time.monotonic() - began:.0f}s so far)"
        )
        with capsys.disabled():
            print(("\n" if attempt == 1 else "") + line)
        if init.returncode != 0:
            failures.append(f"{line}\n{init.stderr}")
    assert not failures, "\n".join(failures)


def test_cluster_up_returns_only_when_every_node_sees_every_node(fresh_clusters: FreshClusters) -> None:
    fresh_clusters.start("cluster-up")
    # At once, no retry: each node as the only coordinator writes at ALL, so it must see both peers alive.
    with fresh_clusters.coordinated_by(HOSTS[0]) as driver:
        driver.connect().execute(
            "CREATE KEYSPACE ring WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
        )
    for n, host in enumerate(HOSTS):
        with fresh_clusters.coordinated_by(host) as driver:
            session = driver.connect()
            session.execute("CREATE TABLE IF NOT EXISTS ring.seen (node int PRIMARY KEY, coordinator text)")
            session.execute(
                SimpleStatement(
                    "INSERT INTO ring.seen (node, coordinator) VALUES (%s, %s)",
                    consistency_level=ConsistencyLevel.ALL,
                ),
                (n, host),
            )


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThreeNodes]:
    # The fresh-start tests leave their last cluster running (whole ring up): this test goes on with it.
    ours = (STATE / "node1" / "cassandra.pid").is_file()
    if all(port_open(h, PORT) for h in HOSTS) and not ours:
        yield ThreeNodes(state=None)  # someone ran `make cassandra-cluster-up`: leave it running
        return
    if port_open(HOSTS[0], PORT) and not ours:
        missing("the 3-node cluster", "a single node holds 127.0.0.1:9042; run `make cassandra-down` first")
    require_tools()
    if not ours:
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
