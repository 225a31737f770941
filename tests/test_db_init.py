"""`mnist db init` and `mnist db status` on a real Cassandra: idempotent, concurrent-safe, clear failures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.store.cassandra.schema import SCHEMA_VERSION, TABLES, table_id
from tests.conftest import free_port
from tests.fixtures.cassandra import CassandraNode

pytestmark = pytest.mark.integration

MNIST = str(Path(sys.executable).with_name("mnist"))


def mnist(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MNIST, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def schema_of(node: CassandraNode, keyspace: str) -> dict[str, Any]:
    """Everything that makes up the keyspace's schema: replication, table ids, columns and their kinds."""
    session = node.session()
    session.cluster.refresh_schema_metadata()
    ks = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    tables = session.execute(
        "SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    columns = session.execute(
        "SELECT table_name, column_name, kind, type, clustering_order FROM system_schema.columns"
        " WHERE keyspace_name = %s",
        (keyspace,),
    )
    return {
        "replication": dict(ks.one().replication),
        "tables": sorted((r.table_name, str(r.id)) for r in tables),
        "columns": sorted(tuple(r) for r in columns),
    }


def test_init_twice_in_parallel_then_again_gives_one_schema(
    cassandra_node: CassandraNode, cassandra_keyspace: str
) -> None:
    url = cassandra_node.store_url(cassandra_keyspace)
    racing = [mnist("db", "init", "--url", url), mnist("db", "init", "--url", url)]
    results = [finish(p) for p in racing]
    for code, output in results:
        assert code == 0, output
        assert f"schema version {SCHEMA_VERSION} ready in keyspace {cassandra_keyspace}" in output
    first = schema_of(cassandra_node, cassandra_keyspace)
    assert [name for name, _ in first["tables"]] == sorted(TABLES)
    # Each table has the fixed id init derives from its name, whichever process created it.
    assert first["tables"] == sorted((t, str(table_id(cassandra_keyspace, t))) for t in TABLES)

    code, output = finish(mnist("db", "init", "--url", url))
    assert code == 0, output
    assert schema_of(cassandra_node, cassandra_keyspace) == first

    code, output = finish(mnist("db", "status", "--url", url))
    assert code == 0, output
    assert f"schema: version {SCHEMA_VERSION}" in output
    assert "rows in predictions: 0" in output and "connectivity: ok (Cassandra 5.0" in output


def test_init_creates_network_topology_replication_per_datacenter(
    cassandra_node: CassandraNode, cassandra_keyspace: str
) -> None:
    url = cassandra_node.store_url(cassandra_keyspace)
    code, output = finish(mnist("db", "init", "--url", url, "--replication", "datacenter1:1"))
    assert code == 0, output
    replication = schema_of(cassandra_node, cassandra_keyspace)["replication"]
    assert replication == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        "datacenter1": "1",
    }


def test_status_of_a_keyspace_without_schema_says_to_run_init(
    cassandra_node: CassandraNode, cassandra_keyspace: str
) -> None:
    code, output = finish(mnist("db", "status", "--url", cassandra_node.store_url(cassandra_keyspace)))
    assert code == 1
    assert "schema: none (run `mnist db init`)" in output


def test_init_gives_up_after_its_timeout_with_progress_and_a_clear_message() -> None:
    url = f"cassandra://127.0.0.1:{free_port()}/mnist"
    code, output = finish(mnist("db", "init", "--url", url, "--timeout", "3"), timeout=60)
    assert code == 1
    assert "waiting for Cassandra at 127.0.0.1" in output
    assert "did not accept connections within 3s" in output and "Traceback" not in output


def test_init_with_a_wrong_password_fails_at_once(cassandra_node: CassandraNode) -> None:
    url = f"cassandra://cassandra:wrong@{cassandra_node.host}:{cassandra_node.port}/mnist"
    code, output = finish(mnist("db", "init", "--url", url, "--timeout", "60"), timeout=60)
    assert code == 1
    assert "refused the credentials" in output and "Traceback" not in output


def test_print_shows_the_rendered_cql_without_connecting() -> None:
    code, output = finish(
        mnist("db", "init", "--url", "cassandra://nowhere.invalid/shop", "--replication", "3", "--print")
    )
    assert code == 0, output
    simple = "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    assert f"CREATE KEYSPACE IF NOT EXISTS shop WITH replication = {simple}" in output
    assert "CREATE TABLE IF NOT EXISTS shop.predictions (" in output
    assert f"ID = {table_id('shop', 'predictions')}" in output


def test_a_bad_replication_option_is_a_usage_error() -> None:
    code, output = finish(mnist("db", "init", "--url", "cassandra://db/shop", "--replication", "lots"))
    assert code == 2
    assert "--replication" in output


def keyspace_exists(node: CassandraNode, keyspace: str) -> bool:
    row = node.session().execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    return row.one() is not None


def test_init_at_a_replication_the_cluster_cannot_meet_waits_then_says_what_is_missing(
    cassandra_node: CassandraNode, cassandra_keyspace: str
) -> None:
    url = cassandra_node.store_url(cassandra_keyspace)
    code, output = finish(
        mnist("db", "init", "--url", url, "--replication", "3", "--timeout", "6"), timeout=90
    )
    assert code == 1, output
    assert "waiting for replicas" in output
    assert "not enough live replicas within 6s" in output
    assert (
        "LOCAL_QUORUM at replication {'class': 'SimpleStrategy', 'replication_factor': 3} needs 2" in output
    )
    assert "Traceback" not in output
    # It waited before changing anything: no keyspace a later, healthier init would have to live with.
    assert not keyspace_exists(cassandra_node, cassandra_keyspace)


def test_init_retries_unavailable_with_growing_pauses_until_its_timeout(
    cassandra_node: CassandraNode, cassandra_keyspace: str
) -> None:
    # A keyspace made earlier at RF 3 keeps it (CREATE ... IF NOT EXISTS): one node cannot take its
    # LOCAL_QUORUM writes, so every attempt meets a real Unavailable from Cassandra.
    cassandra_node.session().execute(
        f"CREATE KEYSPACE {cassandra_keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    url = cassandra_node.store_url(cassandra_keyspace)
    code, output = finish(mnist("db", "init", "--url", url, "--timeout", "25"), timeout=120)
    assert code == 1, output
    pauses = [float(p) for p in re.findall(r"failed \(Unavailable: .*; retrying in ([\d.]+)s$", output, re.M)]
    assert len(pauses) >= 3, output
    assert pauses[:3] == [0.5, 1.0, 2.0]
    assert f"schema init of keyspace {cassandra_keyspace} did not succeed within 25s" in output
    assert "last error Unavailable" in output and "Traceback" not in output
