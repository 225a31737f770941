"""Cassandra backend of `Store`: maps records to CQL and back; outages are `SpooledStore`'s business.

Writes: each record is three or four prepared INSERTs (the row by id, the history rows for all models and
for its model, the hour index when this process has not written that hour yet), sent asynchronously with at
most `max_in_flight` statements in flight. The records with any failed statement are named in the
`PartialWrite` that `record_many` raises, so the `SpooledStore` around it (see `factory.open_store`) keeps
exactly those. Every write is an upsert of the same keys, so writing a record again is harmless, and a
repeated record never clears feedback (unset columns are not written).

Reads during an outage raise `StoreUnavailable` (HTTP 503). When the first connection fails, a background
thread keeps connecting (with backoff) until it succeeds; after that the driver reconnects by itself.

Create the store in the process that uses it (each gunicorn worker, after fork): the driver's event loop
and the connecting thread do not survive a fork.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra import DriverException
from cassandra.cluster import Cluster, NoHostAvailable, ResponseFuture, Session
from cassandra.connection import ConnectionException
from cassandra.query import UNSET_VALUE, PreparedStatement

from service import metrics
from service.errors import StoreUnavailable
from service.store.base import PartialWrite, PredictionRecord
from service.store.cassandra import ready
from service.store.cassandra import schema as cassandra_schema
from service.store.cassandra.session import make_cluster, tls_refusal
from service.store.cassandra.url import CassandraConfig

log = logging.getLogger(__name__)

ALL_MODELS = "*"  # the history scope that holds every model
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
HOURS_REMEMBERED = 256
# Errors that mean "Cassandra cannot answer now" (down, overloaded, timing out, partitioned).
OUTAGE_ERRORS = (DriverException, NoHostAvailable, ConnectionException)
# Connecting to a cluster that is still forming (too few replicas alive for the keyspace it would create,
# nodes not yet agreeing on the schema) is an outage like any other: retried with backoff, logged on change.
CONNECT_RETRYABLE: tuple[type[BaseException], ...] = (
    *OUTAGE_ERRORS,
    ready.ReplicasMissing,
    cassandra_schema.SchemaDisagreement,
)

COLUMNS = (
    "id, created, model, version, digit, confidence, probabilities, pixels, latency_ms, image, image_type,"
    " client, request_id, label, extra"
)


def hour_of(when: datetime) -> datetime:
    """The history partition a timestamp falls in (UTC hour)."""
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.replace(minute=0, second=0, microsecond=0)


def _utc(when: datetime) -> datetime:
    """The driver returns naive UTC datetimes."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _unset(value: Any) -> Any:
    """None becomes 'not written' rather than a null (which would be a tombstone, or erase feedback)."""
    return UNSET_VALUE if value is None else value


def _record(row: Any) -> PredictionRecord:
    return PredictionRecord(
        id=row.id,
        created=_utc(row.created),
        model=row.model,
        version=row.version,
        digit=row.digit,
        confidence=row.confidence,
        probabilities=tuple(row.probabilities),
        pixels=bytes(row.pixels),
        latency_ms=row.latency_ms,
        image=None if row.image is None else bytes(row.image),
        image_type=row.image_type,
        client=row.client,
        request_id=row.request_id,
        label=row.label,
        extra=json.loads(row.extra) if row.extra else {},
    )


class Statements:
    """Every CQL statement of the store, prepared once per connection."""

    def __init__(self, session: Session, config: CassandraConfig) -> None:
        ks = config.keyspace
        self.session = session
        self.keyspace = ks
        self.write_cl = config.write_consistency
        self.read_cl = config.read_consistency
        self.insert_prediction = self._prepare(
            f"INSERT INTO {ks}.predictions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " USING TTL ?",
            write=True,
        )
        self.insert_history = self._prepare(
            f"INSERT INTO {ks}.predictions_by_hour (scope, hour, created, id, digit) VALUES (?, ?, ?, ?, ?)"
            " USING TTL ?",
            write=True,
        )
        self.insert_hour = self._prepare(
            f"INSERT INTO {ks}.history_hours (scope, hour) VALUES (?, ?) USING TTL ?", write=True
        )
        self.select_prediction = self._prepare(f"SELECT {COLUMNS} FROM {ks}.predictions WHERE id = ?")
        self.select_ttl = self._prepare(f"SELECT id, TTL(model) AS ttl FROM {ks}.predictions WHERE id = ?")
        self.update_label = self._prepare(
            f"UPDATE {ks}.predictions USING TTL ? SET label = ?, labelled_at = ? WHERE id = ?", write=True
        )
        self.insert_label = self._prepare(
            f"INSERT INTO {ks}.labels (id, label, labelled_at) VALUES (?, ?, ?) USING TTL ?", write=True
        )
        self.select_labels = self._prepare(f"SELECT id FROM {ks}.labels")
        self.select_hours = self._prepare(f"SELECT hour FROM {ks}.history_hours WHERE scope = ?")
        self.select_hours_before = self._prepare(
            f"SELECT hour FROM {ks}.history_hours WHERE scope = ? AND hour <= ?"
        )
        self._history: dict[tuple[str, bool], PreparedStatement] = {}

    def _prepare(self, cql: str, write: bool = False) -> PreparedStatement:
        stmt = self.session.prepare(cql)
        stmt.consistency_level = self.write_cl if write else self.read_cl
        # Every statement here is safe to repeat (upserts of fixed keys, reads): the driver may retry it on
        # another node after a timeout or a dropped connection.
        stmt.is_idempotent = True
        return stmt

    def history(self, cursor: str, digit: bool) -> PreparedStatement:
        """One hour of history, newest first; cursor is "", "created" or "pair" ((created, id) < (?, ?))."""
        key = (cursor, digit)
        if key not in self._history:
            where = ["scope = ?", "hour = ?"]
            if cursor == "created":
                where.append("created < ?")
            elif cursor == "pair":
                where.append("(created, id) < (?, ?)")
            if digit:
                where.append("digit = ?")
            # Filtering on digit stays inside the single partition named by (scope, hour).
            tail = " ALLOW FILTERING" if digit else ""
            self._history[key] = self._prepare(
                f"SELECT created, id, digit FROM {self.keyspace}.predictions_by_hour"
                f" WHERE {' AND '.join(where)}{tail}"
            )
        return self._history[key]


class CassandraStore:
    """Predictions in Cassandra. Thread-safe."""

    backend = "cassandra"

    def __init__(self, config: CassandraConfig, *, create_schema: bool = True) -> None:
        self.config = config
        self.create_schema = create_schema
        self._in_flight = threading.BoundedSemaphore(config.max_in_flight)
        self._connect_lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._stmts: Statements | None = None
        self._hours_written: OrderedDict[tuple[str, datetime], None] = OrderedDict()
        self._hours_lock = threading.Lock()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._connector: threading.Thread | None = None
        if not self._try_connect():
            self._connector = threading.Thread(
                target=self._keep_connecting, name="cassandra-connect", daemon=True
            )
            self._connector.start()

    # --- connection ---

    def _try_connect(self) -> bool:
        """One connection attempt; a failure is counted and remembered in `last_error`."""
        try:
            self._connect()
        except CONNECT_RETRYABLE as exc:
            self._outage("connect", exc)
            return False
        except (StoreUnavailable, cassandra_schema.SchemaError) as exc:  # no usable schema (yet)
            log.error("%s", exc)
            self.last_error = str(exc)
            return False
        return True

    def _keep_connecting(self) -> None:
        """Until the first connection succeeds (or the store closes): 0.5 s, 1 s, 2 s, then every 5 s."""
        failures = 0
        while not self._stop.wait(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]):
            if self._try_connect():
                return
            failures += 1

    def _connect(self) -> None:
        """Connect, create the schema if the keyspace has none (what `mnist db init` does), prepare."""
        with self._connect_lock:
            if self._session is not None:
                return
            cluster = make_cluster(self.config)
            try:
                session = cluster.connect()
                version = cassandra_schema.current_version(session, self.config.keyspace)
                if version is None:
                    if not self.create_schema:
                        raise StoreUnavailable(
                            f"keyspace {self.config.keyspace} has no schema: run `mnist db init` first"
                        )
                    # A cluster still forming cannot take the keyspace's writes yet: retried until it can.
                    missing = ready.shortfall(
                        cluster,
                        self.config.replication,
                        self.config.write_consistency,
                        self.config.dc or ready.local_dc(session),
                    )
                    if missing is not None:
                        raise ready.ReplicasMissing(
                            f"keyspace {self.config.keyspace} has no schema yet; waiting to create it: "
                            f"{missing}"
                        )
                    log.warning(
                        "keyspace %s has no schema yet: creating it (replication %s) as `mnist db init` does",
                        self.config.keyspace,
                        self.config.replication.cql(),
                    )
                    cassandra_schema.apply(
                        session,
                        self.config.keyspace,
                        self.config.replication,
                        consistency=self.config.write_consistency,
                    )
                stmts = Statements(session, self.config)
            except BaseException:
                cluster.shutdown()
                raise
            self._cluster, self._session, self._stmts = cluster, session, stmts
            self.last_error = None
            log.info("connected to Cassandra at %s", self.config.endpoint)

    def _outage(self, operation: str, exc: BaseException) -> None:
        metrics.STORE_ERRORS.labels(backend=self.backend, operation=operation).inc()
        refusal = tls_refusal(exc, self.config) if isinstance(exc, NoHostAvailable) else None
        message = refusal or f"{type(exc).__name__}: {exc}"
        if message != self.last_error:
            log.warning("Cassandra %s failed (%s): %s", operation, self.config.endpoint, message)
        self.last_error = message

    def _ready(self) -> Statements:
        """The prepared statements, or StoreUnavailable when this process has never reached Cassandra."""
        stmts = self._stmts
        if stmts is None:
            raise StoreUnavailable(f"Cassandra at {self.config.endpoint} is unreachable ({self.last_error}).")
        return stmts

    # --- writes ---

    def record(self, rec: PredictionRecord) -> None:
        """Persist one record (an upsert by id); `StoreUnavailable` when Cassandra cannot take it."""
        self.record_many([rec])

    def record_many(self, recs: Sequence[PredictionRecord]) -> None:
        """Persist records concurrently; `PartialWrite` names those Cassandra did not take."""
        if not recs:
            return
        stmts = self._ready()
        failed, error = self._write(stmts, recs)
        if failed:
            # The same text for every batch of one outage, so the outage is logged once, not per batch.
            message = f"Cassandra at {self.config.endpoint}: {type(error).__name__}: {error}"
            raise PartialWrite(message, failed)

    def _write(
        self, stmts: Statements, recs: Sequence[PredictionRecord]
    ) -> tuple[list[PredictionRecord], BaseException | None]:
        """Send all statements of all records, max_in_flight at once; the records that failed, and why."""
        ttl = self.config.ttl_s
        pending: list[
            tuple[PredictionRecord, list[ResponseFuture | BaseException], list[tuple[str, datetime]]]
        ] = []
        for rec in recs:
            hour = hour_of(rec.created)
            new_hours = [(s, hour) for s in (ALL_MODELS, rec.model) if not self._hour_known(s, hour)]
            calls: list[tuple[PreparedStatement, tuple[Any, ...]]] = [
                (
                    stmts.insert_prediction,
                    (
                        rec.id,
                        rec.created,
                        rec.model,
                        rec.version,
                        int(rec.digit),
                        float(rec.confidence),
                        [float(p) for p in rec.probabilities],
                        bytes(rec.pixels),
                        float(rec.latency_ms),
                        _unset(rec.image),
                        _unset(rec.image_type),
                        _unset(rec.client),
                        _unset(rec.request_id),
                        _unset(rec.label),
                        json.dumps(rec.extra),
                        ttl,
                    ),
                ),
                (stmts.insert_history, (ALL_MODELS, hour, rec.created, rec.id, int(rec.digit), ttl)),
                (stmts.insert_history, (rec.model, hour, rec.created, rec.id, int(rec.digit), ttl)),
            ]
            # The hour row outlives the newest record of its hour.
            hour_ttl = ttl + 3600 if ttl else 0
            calls += [(stmts.insert_hour, (scope, h, hour_ttl)) for scope, h in new_hours]
            pending.append((rec, [self._send(stmt, params) for stmt, params in calls], new_hours))
        failed: list[PredictionRecord] = []
        error: BaseException | None = None
        for rec, futures, new_hours in pending:
            try:
                for future in futures:
                    if isinstance(future, BaseException):
                        raise future
                    future.result()
            except (*OUTAGE_ERRORS, StoreUnavailable) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                failed.append(rec)
                error = exc
                continue
            for scope, hour in new_hours:
                self._hour_written(scope, hour)
        return failed, error

    def _send(self, stmt: PreparedStatement, params: tuple[Any, ...]) -> ResponseFuture | BaseException:
        """Start one statement once a slot is free; the slot is released when it completes either way."""
        session = self._session
        if session is None:
            return StoreUnavailable("not connected")
        self._in_flight.acquire()
        try:
            future = session.execute_async(stmt, params)
        except BaseException as exc:
            self._in_flight.release()
            return exc
        release = self._in_flight.release
        future.add_callbacks(lambda _: release(), lambda _: release())
        return future

    def _hour_known(self, scope: str, hour: datetime) -> bool:
        with self._hours_lock:
            return (scope, hour) in self._hours_written

    def _hour_written(self, scope: str, hour: datetime) -> None:
        with self._hours_lock:
            self._hours_written[(scope, hour)] = None
            while len(self._hours_written) > HOURS_REMEMBERED:
                self._hours_written.popitem(last=False)

    # --- reads ---

    def _execute(self, stmt: Any, params: tuple[Any, ...] | None = None, operation: str = "read") -> Any:
        stmts = self._ready()
        try:
            return stmts.session.execute(stmt, params)
        except OUTAGE_ERRORS as exc:
            raise self._unavailable(operation, exc) from exc

    def _unavailable(self, operation: str, exc: BaseException) -> StoreUnavailable:
        """Count and log an outage seen by a read; the error the API turns into a 503."""
        self._outage(operation, exc)
        return StoreUnavailable(
            f"Cassandra at {self.config.endpoint} cannot answer ({type(exc).__name__}); history is "
            "unavailable until it is back."
        )

    def _get_many(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, PredictionRecord]:
        """Rows by id, fetched concurrently."""
        stmts = self._ready()
        futures = [stmts.session.execute_async(stmts.select_prediction, (i,)) for i in ids]
        found: dict[uuid.UUID, PredictionRecord] = {}
        try:
            for future in futures:
                row = future.result().one()
                if row is not None and row.created is not None:
                    found[row.id] = _record(row)
        except OUTAGE_ERRORS as exc:
            raise self._unavailable("read", exc) from exc
        return found

    def get(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """One record by id, or None."""
        row = self._execute(self._ready().select_prediction, (record_id,)).one()
        # A row whose TTL expired except for a later label has no created: it is gone.
        return _record(row) if row is not None and row.created is not None else None

    def list(
        self,
        limit: int = 50,
        before: datetime | None = None,
        digit: int | None = None,
        model: str | None = None,
        before_id: uuid.UUID | None = None,
        shadows: bool = False,
    ) -> list[PredictionRecord]:
        """Newest first by (created, id); strictly older than `before` (or the pair `before`, `before_id`)."""
        limit = max(0, int(limit))
        found: list[PredictionRecord] = []
        if limit == 0:
            return found
        candidates = self._history(limit, before, before_id, digit, model or ALL_MODELS)
        while len(found) < limit:
            try:  # later pages are fetched while iterating
                chunk = [c for _, c in zip(range(limit - len(found)), candidates, strict=False)]
            except OUTAGE_ERRORS as exc:
                raise self._unavailable("read", exc) from exc
            if not chunk:
                break
            rows = self._get_many([i for _, i in chunk])
            for created, record_id in chunk:
                rec = rows.get(record_id)
                # The history rows are an index; the row by id is the truth (a stale entry is skipped).
                if rec is None or rec.created != created:
                    continue
                if (model is not None and rec.model != model) or (digit is not None and rec.digit != digit):
                    continue
                if not shadows and rec.extra.get("shadow"):
                    continue
                found.append(rec)
        return found

    def _history(
        self, limit: int, before: datetime | None, before_id: uuid.UUID | None, digit: int | None, scope: str
    ) -> Iterator[tuple[datetime, uuid.UUID]]:
        """(created, id) newest first, hour partition by hour, starting below the cursor."""
        stmts = self._ready()
        if before is None:
            hours = self._execute(stmts.select_hours, (scope,))
        else:
            hours = self._execute(stmts.select_hours_before, (scope, hour_of(before)))
        for hour_row in hours:
            hour = _utc(hour_row.hour)
            params: list[Any] = [scope, hour]
            cursor = ""
            if before is not None and hour == hour_of(before):
                cursor = "created" if before_id is None else "pair"
                params += [before] if before_id is None else [before, before_id]
            if digit is not None:
                params.append(int(digit))
            bound = stmts.history(cursor, digit is not None).bind(params)
            bound.fetch_size = max(limit, 20)  # paged: a page that loses stale entries reads on
            for row in self._execute(bound):
                yield _utc(row.created), row.id

    def set_label(self, record_id: uuid.UUID, label: int) -> bool:
        """Store the true digit for a record; False when the id is unknown. The label expires with the row."""
        stmts = self._ready()
        row = self._execute(stmts.select_ttl, (record_id,), operation="label").one()
        if row is None:
            return False
        ttl = int(row.ttl or 0)
        now = datetime.now(UTC)
        self._execute(stmts.update_label, (ttl, int(label), now, record_id), operation="label")
        self._execute(stmts.insert_label, (record_id, int(label), now, ttl), operation="label")
        return True

    def labelled(self) -> Iterator[PredictionRecord]:
        """Every labelled record (in token order), streamed page by page."""
        stmts = self._ready()
        ids = (row.id for row in self._execute(stmts.select_labels, ()))
        while True:
            try:  # later pages are fetched while iterating
                chunk = [i for _, i in zip(range(200), ids, strict=False)]
            except OUTAGE_ERRORS as exc:
                raise self._unavailable("read", exc) from exc
            if not chunk:
                return
            rows = self._get_many(chunk)
            yield from (rows[i] for i in chunk if i in rows and rows[i].label is not None)

    # --- health and shutdown ---

    def health(self) -> dict[str, Any]:
        """ok while Cassandra answers a one-row read within 2 s; "down" otherwise, with the last error."""
        details: dict[str, Any] = {"backend": self.backend, "endpoint": self.config.endpoint}
        cassandra = "up"
        session = self._session
        if session is None:
            cassandra = "unreachable"
        else:
            try:
                session.execute("SELECT release_version FROM system.local", timeout=2.0)
            except OUTAGE_ERRORS as exc:
                self._outage("health", exc)
                cassandra = "unreachable"
        details["cassandra"] = cassandra
        if cassandra != "up" and self.last_error:
            details["error"] = self.last_error
        up = cassandra == "up"
        return {**details, "ok": up, "status": "ok" if up else "down"}

    def close(self) -> None:
        """Stop connecting, close the driver."""
        self._stop.set()
        if self._connector is not None:
            self._connector.join(10)
        if self._cluster is not None:
            self._cluster.shutdown()
        self._session = self._stmts = self._cluster = None
