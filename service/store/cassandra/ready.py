"""Is the cluster ready for a keyspace's writes? Live replicas per token range against a consistency level.

A fresh cluster accepts CQL on its first node before the others have joined or been seen alive; a keyspace
created at RF 3 then answers `Unavailable` to a LOCAL_QUORUM write. `mnist db init` and the store's first
connection ask `shortfall` (computed from the driver's token ring, with the driver's own replica placement)
and wait while it names something missing, then retry the errors in `RETRYABLE` with `backoff_s`.
"""

from __future__ import annotations

from typing import Any

from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.metadata import NetworkTopologyStrategy, SimpleStrategy

from service.store.cassandra.url import Replication

# A cluster that is still forming answers these; each goes away once nodes have joined and agree.
RETRYABLE: tuple[type[BaseException], ...] = (
    Unavailable,
    WriteTimeout,
    ReadTimeout,
    OperationTimedOut,
    NoHostAvailable,
)
ANY_DC = "*"
_ONE_LIKE = {ConsistencyLevel.ANY, ConsistencyLevel.ONE, ConsistencyLevel.LOCAL_ONE}
_LOCAL = {ConsistencyLevel.LOCAL_ONE, ConsistencyLevel.LOCAL_QUORUM, ConsistencyLevel.LOCAL_SERIAL}


class ReplicasMissing(RuntimeError):
    """Too few live replicas for the keyspace's writes yet (the message says which); worth waiting for."""


def local_dc(session: Session) -> str | None:
    """The datacenter of the node the session asked (its coordinator's, for LOCAL_* consistency)."""
    row = session.execute("SELECT data_center FROM system.local").one()
    return None if row is None else str(row.data_center)


def backoff_s(attempt: int, cap: float = 5.0) -> float:
    """0.5 s, 1 s, 2 s, 4 s, then `cap`: quick while a node is about to come up, gentle after."""
    return float(min(0.5 * 2 ** max(attempt - 1, 0), cap))


def required(consistency: int, replication: Replication, local_dc: str | None) -> dict[str, int]:
    """Live replicas a write at `consistency` needs per range: {datacenter or ANY_DC: count}."""
    per_dc = replication.per_dc or {ANY_DC: replication.factor}
    total = sum(per_dc.values())
    # SimpleStrategy ignores datacenters, so "local" is every replica there.
    local = ANY_DC if not replication.per_dc else (local_dc or next(iter(sorted(per_dc))))
    quorum = {dc: rf // 2 + 1 for dc, rf in per_dc.items()}
    if consistency in _ONE_LIKE:
        return {local if consistency in _LOCAL else ANY_DC: 1}
    if consistency == ConsistencyLevel.TWO:
        return {ANY_DC: 2}
    if consistency == ConsistencyLevel.THREE:
        return {ANY_DC: 3}
    if consistency in (ConsistencyLevel.LOCAL_QUORUM, ConsistencyLevel.LOCAL_SERIAL):
        return {local: quorum.get(local, per_dc.get(local, 0) // 2 + 1)}
    if consistency == ConsistencyLevel.EACH_QUORUM:
        return quorum
    if consistency == ConsistencyLevel.ALL:
        return {ANY_DC: total}
    return {ANY_DC: total // 2 + 1}  # QUORUM, SERIAL


def shortfall(
    cluster: Cluster, replication: Replication, consistency: int, local_dc: str | None
) -> str | None:
    """None when every token range has the live replicas `consistency` needs; else what is missing."""
    token_map = cluster.metadata.token_map
    if token_map is None or not token_map.ring:
        return "the driver knows no token ring yet"
    strategy: Any
    if replication.per_dc:
        strategy = NetworkTopologyStrategy({dc: str(rf) for dc, rf in replication.per_dc.items()})
    else:
        strategy = SimpleStrategy({"replication_factor": str(replication.factor)})
    replicas = strategy.make_token_replica_map(token_map.token_to_host_owner, token_map.ring)
    need = required(consistency, replication, local_dc)
    name = ConsistencyLevel.value_to_name[consistency]
    hosts = cluster.metadata.all_hosts()
    up = sorted(str(h.address) for h in hosts if h.is_up)
    for token, owners in replicas.items():
        live = [h for h in owners if h.is_up]
        for dc, count in need.items():
            have = len(live) if dc == ANY_DC else sum(h.datacenter == dc for h in live)
            if have < count:
                where = "" if dc == ANY_DC else f" in {dc}"
                return (
                    f"{name} at replication {replication.cql()} needs {count} live replicas{where} for every "
                    f"token range; range {token.value} has {have} ({len(hosts)} nodes known, up: "
                    f"{', '.join(up) or 'none'})"
                )
    return None
