"""What CassandraStore (behind its spool) promises beyond the shared contract: outages cost no records,
retention, settings.

The shared contract suite (tests/test_store_contract.py) runs against Cassandra through `cassandra_store`.
Outages here are real: a store pointed at a port where nothing listens, or a consistency level the one node
cannot meet; the node itself is killed in tests/test_cassandra_fault.py.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel

from service.errors import StoreUnavailable
from service.settings import Settings
from service.store.base import PredictionRecord
from service.store.cassandra import schema as cassandra_schema
from service.store.cassandra.store import CassandraStore
from service.store.cassandra.url import BadStoreUrl, CassandraConfig, Replication, parse_url
from service.store.factory import open_store, spooled_cassandra
from service.store.spool import Spool, decode, encode
from service.store.spooled import SpooledStore
from tests.conftest import free_port, missing
from tests.fixtures.cassandra import CassandraNode

pytestmark = pytest.mark.integration


def record(i: int = 0, **fields: object) -> PredictionRecord:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "created": datetime(2026, 5, 1, 12, 0, tzinfo=UTC) + timedelta(milliseconds=i),
        "model": "cnn",
        "version": "1",
        "digit": i % 10,
        "confidence": 0.75,
        "probabilities": tuple([0.025] * 9 + [0.775]),
        "pixels": bytes(784),
        "latency_ms": 0.5,
    }
    values.update(fields)
    return PredictionRecord(**values)  # type: ignore[arg-type]


def stored_ids(node: CassandraNode, keyspace: str) -> list[uuid.UUID]:
    return [row.id for row in node.session().execute(f"SELECT id FROM {keyspace}.predictions")]


def unreachable(node: CassandraNode, keyspace: str, spool: Path) -> CassandraConfig:
    """A config whose Cassandra does not exist: nothing listens on the port."""
    return replace(node.config(keyspace, spool), port=free_port(), connect_timeout_s=1.0, timeout_s=1.0)


# --- URL and settings ---


def test_the_url_carries_hosts_credentials_keyspace_and_options() -> None:
    config = parse_url(
        "cassandra://app:s%3Acret@c0.example,c1.example:9142/mnist"
        "?dc=eu1&consistency=QUORUM&write_consistency=EACH_QUORUM&timeout=2.5&replication=eu1:3,us1:2"
    )
    assert config.hosts == ("c0.example", "c1.example")
    assert (config.port, config.keyspace, config.dc) == (9142, "mnist", "eu1")
    assert (config.username, config.password) == ("app", "s:cret")
    assert config.read_consistency == ConsistencyLevel.QUORUM
    assert config.write_consistency == ConsistencyLevel.EACH_QUORUM
    assert config.timeout_s == 2.5
    assert config.replication.cql() == "{'class': 'NetworkTopologyStrategy', 'eu1': 3, 'us1': 2}"
    assert "s:cret" not in repr(config)


def test_defaults_are_local_quorum_port_9042_and_rf_1() -> None:
    config = parse_url("cassandra://db/mnist")
    assert (config.port, config.read_consistency, config.write_consistency) == (
        9042,
        ConsistencyLevel.LOCAL_QUORUM,
        ConsistencyLevel.LOCAL_QUORUM,
    )
    assert config.replication == Replication(factor=1)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("cassandra:///mnist", "no host"),
        ("cassandra://db:90x2/mnist", "port"),
        ("cassandra://db/", "keyspace"),
        ("cassandra://db/my-keyspace", "keyspace"),
        ("cassandra://db/mnist?consistency=MOST", "consistency level"),
        ("cassandra://db/mnist?replication=three", "replication"),
        ("cassandra://db/mnist?colour=blue", "unknown parameter"),
        ("cassandra://db/mnist?timeout=-1", "timeout"),
    ],
)
def test_a_bad_url_is_rejected_saying_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(BadStoreUrl, match=complaint):
        parse_url(url)


def test_settings_override_the_url(tmp_path: Path) -> None:
    settings = Settings(
        store_url="cassandra://u:p@db/mnist?tls=false",
        cassandra_username="svc",
        cassandra_password="secret",
        cassandra_ttl_s=86_400,
        cassandra_max_in_flight=8,
        cassandra_tls_ca=tmp_path / "ca.pem",
        spool_dir=tmp_path / "spool",
    )
    config = CassandraConfig.from_settings(settings)
    assert (config.username, config.password, config.ttl_s, config.max_in_flight) == (
        "svc",
        "secret",
        86_400,
        8,
    )
    assert config.tls and config.tls_ca == tmp_path / "ca.pem"
    assert config.spool_dir == tmp_path / "spool"


def test_spool_encoding_round_trips_every_field() -> None:
    rec = record(
        3, image=b"\x89PNG" + bytes(50), image_type="image/png", client="::1", label=4, extra={"a": [1]}
    )
    assert decode(encode(rec)) == rec


# --- real Cassandra ---


def test_open_store_gives_a_working_cassandra_store(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    settings = Settings(store_url=cassandra_node.store_url(cassandra_keyspace), spool_dir=tmp_path / "spool")
    store = open_store(settings)
    try:
        assert isinstance(store, SpooledStore) and isinstance(store.inner, CassandraStore)
        rec = record()
        store.record(rec)
        assert store.get(rec.id) == rec
    finally:
        store.close()


def test_statements_use_the_configured_consistency(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    config = replace(
        cassandra_node.config(cassandra_keyspace, tmp_path / "spool"),
        read_consistency=ConsistencyLevel.ONE,
        write_consistency=ConsistencyLevel.ALL,
    )
    store = spooled_cassandra(config)
    try:
        stmts = store.inner._stmts
        assert stmts is not None
        assert stmts.insert_prediction.consistency_level == ConsistencyLevel.ALL
        assert stmts.select_prediction.consistency_level == ConsistencyLevel.ONE
        rec = record()
        store.record(rec)
        assert store.get(rec.id) == rec and store.spool.depth == 0
    finally:
        store.close()


def test_tls_with_the_nodes_ca_works_and_a_foreign_ca_is_refused(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    if not cassandra_node.tls_ca.exists():
        missing("the node's TLS CA", f"{cassandra_node.tls_ca}: start the node with scripts/cassandra.sh up")
    config = replace(cassandra_node.config(cassandra_keyspace, tmp_path / "spool"), tls=True)
    store = spooled_cassandra(replace(config, tls_ca=cassandra_node.tls_ca))
    try:
        rec = record()
        store.record(rec)
        assert store.get(rec.id) == rec and store.spool.depth == 0
        session = store.inner._stmts.session  # type: ignore[union-attr]
        assert any(row.ssl_enabled for row in session.execute("SELECT ssl_enabled FROM system_views.clients"))
    finally:
        store.close()
    foreign = tmp_path / "foreign-ca.pem"
    key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(tmp_path / "f.key"),
    ]
    subprocess.run(
        ["openssl", "req", "-x509", *key, "-days", "1", "-subj", "/CN=someone-else", "-out", str(foreign)],
        check=True, capture_output=True,
    )  # fmt: skip
    untrusting = CassandraStore(replace(config, tls_ca=foreign, spool_dir=tmp_path / "spool-foreign"))
    try:
        assert untrusting.health()["cassandra"] == "unreachable"
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusting.last_error)
    finally:
        untrusting.close()


def test_a_write_the_cluster_cannot_acknowledge_goes_to_the_spool(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    # One node cannot give THREE acknowledgements: Cassandra answers Unavailable, as when replicas are down.
    # (The schema is there already: a store would not create a keyspace whose writes the cluster cannot take.)
    cassandra_schema.apply(cassandra_node.session(), cassandra_keyspace, Replication())
    config = replace(
        cassandra_node.config(cassandra_keyspace, tmp_path / "spool"),
        write_consistency=ConsistencyLevel.THREE,
    )
    store = spooled_cassandra(config)
    try:
        recs = [record(i) for i in range(5)]
        store.record_many(recs)  # does not raise
        assert store.spool.depth == 5
        health = store.health()
        assert health["ok"] is True and health["status"] == "degraded" and health["spool_depth"] == 5
        assert stored_ids(cassandra_node, cassandra_keyspace) == []
    finally:
        store.close()
    # The spool outlives the process: a store that can write adopts the records and replays them.
    healthy = spooled_cassandra(cassandra_node.config(cassandra_keyspace, tmp_path / "spool"))
    try:
        assert healthy.wait_for_replay(30)
        assert sorted(stored_ids(cassandra_node, cassandra_keyspace)) == sorted(r.id for r in recs)
        assert healthy.health()["status"] == "ok"
    finally:
        healthy.close()
    assert not list((tmp_path / "spool").glob("spool-*")), "replayed spool files are removed"


def test_without_cassandra_records_are_spooled_and_reads_say_503(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    store = spooled_cassandra(unreachable(cassandra_node, cassandra_keyspace, tmp_path / "spool"))
    recs = [record(i) for i in range(20)]
    try:
        for rec in recs[:5]:
            store.record(rec)
        store.record_many(recs[5:])
        assert store.spool.depth == 20
        health = store.health()
        assert health == {
            **health,
            "ok": True,
            "status": "degraded",
            "cassandra": "unreachable",
            "spool_depth": 20,
        }
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.get(recs[0].id)
        with pytest.raises(StoreUnavailable):
            store.list(limit=10)
        with pytest.raises(StoreUnavailable):
            store.set_label(recs[0].id, 3)
    finally:
        store.close()
    later = spooled_cassandra(cassandra_node.config(cassandra_keyspace, tmp_path / "spool"))
    try:
        assert later.wait_for_replay(30)
        assert sorted(stored_ids(cassandra_node, cassandra_keyspace)) == sorted(r.id for r in recs)
        # Oldest first, nothing lost or doubled: the history lists them all, newest first.
        assert [r.id for r in later.list(limit=50)] == [r.id for r in reversed(recs)]
    finally:
        later.close()


def test_a_record_replayed_twice_is_still_one_row(
    cassandra_store: SpooledStore[CassandraStore], cassandra_node: CassandraNode
) -> None:
    rec = record()
    cassandra_store.record(rec)
    cassandra_store.spool.append([rec, rec])  # e.g. a write that reached Cassandra but timed out
    assert cassandra_store.wait_for_replay(30)
    keyspace = cassandra_store.inner.config.keyspace
    assert stored_ids(cassandra_node, keyspace) == [rec.id]
    history = cassandra_node.session().execute(f"SELECT id FROM {keyspace}.predictions_by_hour").all()
    assert len(history) == 2  # one row in the all-models scope, one in the model's


def test_the_spool_cap_refuses_records_and_counts_them(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recs = [record(i) for i in range(10)]
    cap = sum(len(encode(r)) for r in recs[:3]) + 10  # room for exactly three
    config = replace(unreachable(cassandra_node, cassandra_keyspace, tmp_path / "spool"), spool_max_bytes=cap)
    store = spooled_cassandra(config)
    try:
        store.record_many(recs)
        assert store.spool.depth == 3 and store.spool.rejected == 7
        health = store.health()
        assert health["spool_rejected"] == 7 and health["status"] == "degraded"
        refused = [r for r in caplog.records if "rejected" in r.getMessage()]
        assert {str(r.id) for r in recs[3:]} == {r.record_id for r in refused}  # type: ignore[attr-defined]
    finally:
        store.close()


def test_retention_ttl_applies_to_every_row_and_to_later_labels(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    day = 86_400
    store = spooled_cassandra(
        replace(cassandra_node.config(cassandra_keyspace, tmp_path / "spool"), ttl_s=day)
    )
    try:
        rec = record()
        store.record(rec)
        assert store.set_label(rec.id, 9)
        session = cassandra_node.session()
        ks = cassandra_keyspace
        ttls = [
            session.execute(f"SELECT TTL(model) AS t FROM {ks}.predictions WHERE id = %s", (rec.id,)).one().t,
            session.execute(f"SELECT TTL(label) AS t FROM {ks}.predictions WHERE id = %s", (rec.id,)).one().t,
            session.execute(f"SELECT TTL(label) AS t FROM {ks}.labels WHERE id = %s", (rec.id,)).one().t,
            session.execute(f"SELECT TTL(digit) AS t FROM {ks}.predictions_by_hour LIMIT 1").one().t,
        ]
        assert all(day - 120 < t <= day for t in ttls), ttls
    finally:
        store.close()


def test_many_records_with_few_writes_in_flight_all_arrive(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    store = spooled_cassandra(
        replace(cassandra_node.config(cassandra_keyspace, tmp_path / "spool"), max_in_flight=4)
    )
    try:
        recs = [record(i) for i in range(600)]
        for start in range(0, 600, 256):  # as the write queue hands them over
            store.record_many(recs[start : start + 256])
        assert store.spool.depth == 0
        assert len(stored_ids(cassandra_node, cassandra_keyspace)) == 600
        assert store.inner._in_flight._value == 4  # every slot given back  # type: ignore[attr-defined]
    finally:
        store.close()


def test_history_walks_back_across_hours_and_days(cassandra_store: SpooledStore[CassandraStore]) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    recs = [
        record(created=base - timedelta(hours=h * 7), model="softmax" if h % 2 else "cnn") for h in range(12)
    ]
    cassandra_store.record_many(recs)
    assert [r.id for r in cassandra_store.list(limit=5)] == [r.id for r in recs[:5]]
    older = cassandra_store.list(limit=100, before=recs[4].created)
    assert [r.id for r in older] == [r.id for r in recs[5:]]
    assert [r.id for r in cassandra_store.list(limit=100, model="softmax")] == [r.id for r in recs[1::2]]


def test_a_fresh_keyspace_without_schema_is_refused_when_schema_creation_is_off(
    cassandra_node: CassandraNode, cassandra_keyspace: str, tmp_path: Path
) -> None:
    store = spooled_cassandra(
        cassandra_node.config(cassandra_keyspace, tmp_path / "spool"), create_schema=False
    )
    try:
        with pytest.raises(StoreUnavailable):
            store.get(uuid.uuid4())
        store.record(record())
        assert store.spool.depth == 1  # kept until `mnist db init` has run
    finally:
        store.close()


def test_spool_files_of_a_live_process_are_not_adopted(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1_000_000)
    first.append([record(1)])
    second = Spool(tmp_path, 1_000_000)
    try:
        assert second.depth == 0 and second.adopt_orphans() == 0
        first.close()  # the owner goes away with a record left: now it is an orphan
        assert second.adopt_orphans() == 1 and second.depth == 1
    finally:
        second.close()
