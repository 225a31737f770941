"""`mnist db init` and `mnist db status`: create the Cassandra schema and report on it.

`init` is what the Helm init Job runs: it waits for Cassandra (a fresh cluster takes a while) and then for
enough live replicas for the keyspace's replication at the consistency it writes with (nodes still joining),
applies schema.cql idempotently (safe from many pods at once) retrying what a forming cluster answers
(Unavailable, timeouts, schema disagreement) with backoff, and records the version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cassandra import AuthenticationFailed, DriverException
from cassandra.cluster import Cluster, NoHostAvailable, Session

from service.store.cassandra import schema as cassandra_schema
from service.store.cassandra.ready import RETRYABLE, backoff_s, local_dc, shortfall
from service.store.cassandra.session import TlsSetupError, make_cluster, tls_refusal
from service.store.cassandra.url import CassandraConfig, Replication

COUNTED_TABLES = ("predictions", "labels", "history_hours")
REPLICA_POLL_S = 1.0
PROGRESS_EVERY_S = 10.0
# What a cluster still forming answers to schema changes: worth another try after a pause.
SCHEMA_RETRYABLE: tuple[type[BaseException], ...] = (*RETRYABLE, cassandra_schema.SchemaDisagreement)


class DbError(RuntimeError):
    """Init or status cannot proceed; the message says why and what to do."""


@dataclass
class Status:
    """What `mnist db status` prints."""

    endpoint: str
    reachable: bool
    release_version: str | None = None
    nodes: list[str] = field(default_factory=list)
    schema_version: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def lines(self) -> list[str]:
        out = [f"cassandra: {self.endpoint}"]
        if not self.reachable:
            return [*out, f"connectivity: unreachable ({self.error})"]
        out.append(f"connectivity: ok (Cassandra {self.release_version}, nodes {', '.join(self.nodes)})")
        if self.schema_version is None:
            out.append("schema: none (run `mnist db init`)")
        else:
            out.append(
                f"schema: version {self.schema_version} (this code: {cassandra_schema.SCHEMA_VERSION})"
            )
            out += [f"rows in {table}: {count}" for table, count in self.rows.items()]
        return out


def connect(
    config: CassandraConfig, timeout_s: float, progress: Callable[[str], None]
) -> tuple[Cluster, Session]:
    """Connect, retrying until `timeout_s`: Cassandra may still be starting (a new pod, a new cluster)."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            cluster = make_cluster(config)
        except TlsSetupError as exc:
            raise DbError(str(exc)) from None
        try:
            return cluster, cluster.connect()
        except NoHostAvailable as exc:
            cluster.shutdown()
            if any(isinstance(e, AuthenticationFailed) for e in exc.errors.values()):
                raise DbError(
                    f"Cassandra at {config.endpoint} refused the credentials: check the user and password "
                    "(URL or MNIST_CASSANDRA_USERNAME / MNIST_CASSANDRA_PASSWORD)"
                ) from exc
            refusal = tls_refusal(exc, config)
            if refusal is not None:
                raise DbError(refusal) from exc
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise DbError(
                    f"Cassandra at {config.endpoint} did not accept connections within {timeout_s:.0f}s: "
                    f"{_reason(exc)}"
                ) from exc
            progress(
                f"waiting for Cassandra at {config.endpoint} ({waited:.0f}s of {timeout_s:.0f}s): "
                f"{_reason(exc)}"
            )
            time.sleep(min(2.0 * attempt, 5.0, max(0.0, timeout_s - waited)))


def _reason(exc: NoHostAvailable) -> str:
    reasons = {f"{type(e).__name__}: {e}" for e in exc.errors.values()}
    return "; ".join(sorted(reasons)) or str(exc)


def init(
    config: CassandraConfig,
    replication: Replication | None = None,
    timeout_s: float = 300,
    progress: Callable[[str], None] = print,
) -> int:
    """Create keyspace and tables (idempotent), wait for schema agreement; returns the schema version.

    Everything (connecting, waiting for replicas, retries) happens within `timeout_s`.
    """
    replication = replication or config.replication
    deadline = time.monotonic() + timeout_s
    cluster, session = connect(config, timeout_s, progress)
    try:
        wait_for_replicas(cluster, session, config, replication, deadline, timeout_s, progress)
        progress(f"applying schema version {cassandra_schema.SCHEMA_VERSION} to keyspace {config.keyspace} "
                 f"(replication {replication.cql()})")  # fmt: skip
        version = _apply_with_retries(session, config, replication, deadline, timeout_s, progress)
        progress(f"schema version {version} ready in keyspace {config.keyspace}; all nodes agree")
        return version
    finally:
        cluster.shutdown()


def wait_for_replicas(
    cluster: Cluster,
    session: Session,
    config: CassandraConfig,
    replication: Replication,
    deadline: float,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Until every token range has the live replicas the write consistency needs (nodes may still join)."""
    started = time.monotonic()
    dc = config.dc or local_dc(session)
    said, said_at = "", 0.0
    while True:
        cluster.refresh_nodes(force_token_rebuild=True)  # do not wait for the driver's debounced events
        missing = shortfall(cluster, replication, config.write_consistency, dc)
        now = time.monotonic()
        if missing is None:
            up = sorted(str(h.address) for h in cluster.metadata.all_hosts() if h.is_up)
            progress(f"enough live replicas after {now - started:.0f}s (up: {', '.join(up)})")
            return
        if now >= deadline:
            raise DbError(f"not enough live replicas within {timeout_s:.0f}s: {missing}")
        if missing != said or now - said_at >= PROGRESS_EVERY_S:
            progress(f"waiting for replicas ({now - started:.0f}s, {timeout_s:.0f}s allowed): {missing}")
            said, said_at = missing, now
        time.sleep(min(REPLICA_POLL_S, max(0.0, deadline - now)))


def _apply_with_retries(
    session: Session,
    config: CassandraConfig,
    replication: Replication,
    deadline: float,
    timeout_s: float,
    progress: Callable[[str], None],
) -> int:
    """cassandra_schema.apply, again after what a forming cluster answers, until the deadline."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return cassandra_schema.apply(
                session, config.keyspace, replication, consistency=config.write_consistency
            )
        except SCHEMA_RETRYABLE as exc:
            left = deadline - time.monotonic()
            reason = _reason(exc) if isinstance(exc, NoHostAvailable) else f"{type(exc).__name__}: {exc}"
            if left <= 0:
                raise DbError(
                    f"schema init of keyspace {config.keyspace} did not succeed within {timeout_s:.0f}s "
                    f"({attempt} attempts); last error {reason}"
                ) from exc
            pause = min(backoff_s(attempt), left)
            progress(f"attempt {attempt} failed ({reason}); retrying in {pause:.1f}s")
            time.sleep(pause)
        except (cassandra_schema.SchemaError, DriverException) as exc:
            raise DbError(
                f"schema init of keyspace {config.keyspace} failed: {type(exc).__name__}: {exc}"
            ) from exc


def status(config: CassandraConfig, timeout_s: float = 10) -> Status:
    """Connectivity, schema version and row counts (a full count: slow on a large table)."""
    result = Status(endpoint=config.endpoint, reachable=False)
    try:
        cluster, session = connect(config, timeout_s, progress=lambda _: None)
    except DbError as exc:
        result.error = str(exc)
        return result
    try:
        result.reachable = True
        local = session.execute("SELECT release_version FROM system.local").one()
        result.release_version = local.release_version
        result.nodes = sorted(str(h.address) for h in cluster.metadata.all_hosts() if h.is_up)
        result.schema_version = cassandra_schema.current_version(session, config.keyspace)
        if result.schema_version is not None:
            for table in COUNTED_TABLES:
                row: Any = session.execute(
                    f"SELECT COUNT(*) AS n FROM {config.keyspace}.{table}", timeout=120
                ).one()
                result.rows[table] = int(row.n)
    except (DriverException, NoHostAvailable) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise DbError(f"status of {config.endpoint} failed: {result.error}") from exc
    finally:
        cluster.shutdown()
    return result
