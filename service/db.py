"""`mnist db init` and `mnist db status`: create the Cassandra schema and report on it.

`init` is what the Helm init Job runs: it waits for Cassandra (a fresh cluster takes a while), applies
schema.cql idempotently (safe from many pods at once), waits for schema agreement and records the version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cassandra import AuthenticationFailed, DriverException
from cassandra.cluster import Cluster, NoHostAvailable, Session

from service.store.cassandra import schema as cassandra_schema
from service.store.cassandra.session import make_cluster
from service.store.cassandra.url import CassandraConfig, Replication

COUNTED_TABLES = ("predictions", "labels", "history_hours")


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
        cluster = make_cluster(config)
        try:
            return cluster, cluster.connect()
        except NoHostAvailable as exc:
            cluster.shutdown()
            if any(isinstance(e, AuthenticationFailed) for e in exc.errors.values()):
                raise DbError(
                    f"Cassandra at {config.endpoint} refused the credentials: check the user and password "
                    "(URL or MNIST_CASSANDRA_USERNAME / MNIST_CASSANDRA_PASSWORD)"
                ) from exc
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
    """Create keyspace and tables (idempotent), wait for schema agreement; returns the schema version."""
    replication = replication or config.replication
    cluster, session = connect(config, timeout_s, progress)
    try:
        progress(f"connected; applying schema version {cassandra_schema.SCHEMA_VERSION} to keyspace "
                 f"{config.keyspace} (replication {replication.cql()})")  # fmt: skip
        try:
            version = cassandra_schema.apply(session, config.keyspace, replication)
        except (cassandra_schema.SchemaError, DriverException, NoHostAvailable) as exc:
            raise DbError(
                f"schema init of keyspace {config.keyspace} failed: {type(exc).__name__}: {exc}"
            ) from exc
        progress(f"schema version {version} ready in keyspace {config.keyspace}; all nodes agree")
        return version
    finally:
        cluster.shutdown()


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
