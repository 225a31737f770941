"""The Cassandra schema (schema.cql): render it for a keyspace, apply it idempotently, read its version.

Safe from many processes at once: every statement is IF NOT EXISTS, and each table is created with a fixed
id derived from keyspace and table name, so two pods racing to create the same table through different
coordinators create the same table instead of two conflicting ones. One process sends all its schema
statements to one coordinator: on a cluster still forming, a node that joined a moment ago may not have the
keyspace yet when the next statement reaches it (seen: `Keyspace 'x' doesn't exist` on CREATE TABLE right
after CREATE KEYSPACE had reported agreement); that answer is also taken as disagreement, worth a retry.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import Session
from cassandra.pool import Host
from cassandra.query import SimpleStatement

from service.store.cassandra.url import Replication

SCHEMA_VERSION = 1
COMPONENT = "mnist-service"
TABLE_ID_NAMESPACE = uuid.UUID("9b0d6a52-8d6e-4c2e-9a55-0f6c3f3a1d7e")
TABLES = ("predictions", "predictions_by_hour", "history_hours", "labels", "schema_version")
CREATE_TABLE_RE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)", re.IGNORECASE)
# Schema changes wait for every node to agree; a slow cluster gets this long per statement.
SCHEMA_AGREEMENT_WAIT_S = 60


class SchemaError(RuntimeError):
    """The keyspace holds a schema this code cannot use (newer, or not agreed across nodes)."""


class SchemaDisagreement(SchemaError):
    """Nodes did not agree on the schema in time: a cluster still forming; worth trying again."""


def cql_text() -> str:
    """schema.cql as shipped in the package."""
    return files("service.store.cassandra").joinpath("schema.cql").read_text()


def table_id(keyspace: str, table: str) -> uuid.UUID:
    """The fixed id of a table: the same in every pod, so concurrent creates converge."""
    return uuid.uuid5(TABLE_ID_NAMESPACE, f"{keyspace}.{table}")


def statements(keyspace: str, replication: Replication) -> list[str]:
    """schema.cql rendered for `keyspace`, one statement per item, each table with its fixed id."""
    text = "\n".join(line.split("--", 1)[0] for line in cql_text().splitlines())
    text = text.replace("{keyspace}", keyspace).replace("{replication}", replication.cql())
    rendered = []
    for raw in text.split(";"):
        stmt = " ".join(raw.split())
        if not stmt:
            continue
        match = CREATE_TABLE_RE.match(stmt)
        if match:
            clause = " AND " if re.search(r"\)\s+WITH\s", stmt) else " WITH "
            stmt += f"{clause}ID = {table_id(match.group(1), match.group(2))}"
        rendered.append(stmt)
    return rendered


def _coordinator(session: Session) -> Host | None:
    """One live node to send every schema statement to (None: let the driver pick, it will fail clearly)."""
    up = [host for host in session.cluster.metadata.all_hosts() if host.is_up]
    return min(up, key=lambda host: str(host.endpoint)) if up else None


def _execute(
    session: Session, statement: str | SimpleStatement, params: tuple, coordinator: Host | None
) -> Any:
    """Run one statement on `coordinator`; an answer that it has not seen an earlier statement's keyspace
    or table yet is SchemaDisagreement (retried by the caller), any other refusal is raised as it is."""
    try:
        return session.execute(statement, params or None, timeout=SCHEMA_AGREEMENT_WAIT_S, host=coordinator)
    except InvalidRequest as exc:
        if "doesn't exist" in str(exc) or "unconfigured table" in str(exc):
            raise SchemaDisagreement(f"{exc} (coordinator {coordinator})") from exc
        raise


def current_version(session: Session, keyspace: str) -> int | None:
    """The schema version recorded in the keyspace, or None when init has not completed there."""
    tables = session.cluster.metadata.keyspaces.get(keyspace)
    if tables is None or "schema_version" not in tables.tables:
        return None
    row = session.execute(
        f"SELECT version FROM {keyspace}.schema_version WHERE component = %s", (COMPONENT,)
    ).one()
    return None if row is None else int(row.version)


def apply(
    session: Session,
    keyspace: str,
    replication: Replication,
    consistency: int = ConsistencyLevel.LOCAL_QUORUM,
) -> int:
    """Create keyspace and tables if missing, wait for schema agreement, record the version."""
    found = current_version(session, keyspace)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaError(
            f"keyspace {keyspace} has schema version {found}, newer than this code's {SCHEMA_VERSION}: "
            "upgrade the service"
        )
    coordinator = _coordinator(session)
    for stmt in statements(keyspace, replication):
        result = _execute(session, stmt, (), coordinator)
        if not result.response_future.is_schema_agreed:
            raise SchemaDisagreement(
                f"nodes did not agree on the schema within {SCHEMA_AGREEMENT_WAIT_S}s after: {stmt}"
            )
    session.cluster.refresh_schema_metadata(max_schema_agreement_wait=SCHEMA_AGREEMENT_WAIT_S)
    insert = SimpleStatement(
        f"INSERT INTO {keyspace}.schema_version (component, version, applied_at, applied_by)"
        " VALUES (%s, %s, %s, %s)",
        consistency_level=consistency,
    )
    row = (COMPONENT, SCHEMA_VERSION, datetime.now(UTC), f"{socket.gethostname()}/{os.getpid()}")
    _execute(session, insert, row, coordinator)
    return SCHEMA_VERSION
