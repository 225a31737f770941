"""SQLite backend of `Store`: one file, WAL, so `make run` needs nothing else installed.

Several gunicorn workers (processes) and their threads share the file: each thread has its own connection,
WAL lets readers proceed while one writer commits, and `busy_timeout` makes writers wait for each other
instead of failing. `synchronous=NORMAL` in WAL mode survives a crash of the service (not of the machine).

Paging: rows are ordered by (created, id) descending. `list(before=t)` returns rows strictly older than
`t`; with `before_id` too the cursor is the pair, so rows that share a timestamp are paged without gaps or
repeats (pass the last row's `created` and `id` of the previous page).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import metrics
from service.errors import StoreUnavailable
from service.store.base import PredictionRecord

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
WAL_SIZE_LIMIT = 64 * 2**20

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id            TEXT PRIMARY KEY,           -- UUID, canonical lowercase form
    created_us    INTEGER NOT NULL,           -- microseconds since the Unix epoch, UTC
    model         TEXT NOT NULL,
    version       TEXT NOT NULL,
    digit         INTEGER NOT NULL,
    confidence    REAL NOT NULL,
    probabilities TEXT NOT NULL,              -- JSON array of 10 floats
    pixels        BLOB NOT NULL,              -- the normalized 28x28 uint8 input, row-major
    latency_ms    REAL NOT NULL,
    image         BLOB,                       -- the original upload when under the size cap
    image_type    TEXT,
    client        TEXT,
    request_id    TEXT,
    label         INTEGER,                    -- the true digit, from feedback
    extra         TEXT NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS predictions_digit ON predictions (digit, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS predictions_model ON predictions (model, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS predictions_labelled ON predictions (created_us) WHERE label IS NOT NULL;
CREATE TABLE IF NOT EXISTS store_health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_us INTEGER NOT NULL);
"""

COLUMNS = (
    "id, created_us, model, version, digit, confidence, probabilities, pixels, latency_ms,"
    " image, image_type, client, request_id, label, extra"
)

# An upsert: the same id twice is the same row. A replayed record never erases feedback given meanwhile.
UPSERT = f"""
INSERT INTO predictions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    created_us = excluded.created_us, model = excluded.model, version = excluded.version,
    digit = excluded.digit, confidence = excluded.confidence, probabilities = excluded.probabilities,
    pixels = excluded.pixels, latency_ms = excluded.latency_ms, image = excluded.image,
    image_type = excluded.image_type, client = excluded.client, request_id = excluded.request_id,
    label = COALESCE(excluded.label, predictions.label), extra = excluded.extra
"""


class SqliteUnavailable(StoreUnavailable, sqlite3.OperationalError):
    """The file cannot be written now: a `StoreUnavailable` (for `SpooledStore`) and the sqlite3 error."""


def _to_us(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    seconds, micros = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)


def _row(rec: PredictionRecord) -> tuple[Any, ...]:
    return (
        str(rec.id),
        _to_us(rec.created),
        rec.model,
        rec.version,
        int(rec.digit),
        float(rec.confidence),
        json.dumps([float(p) for p in rec.probabilities]),
        bytes(rec.pixels),
        float(rec.latency_ms),
        rec.image,
        rec.image_type,
        rec.client,
        rec.request_id,
        rec.label,
        json.dumps(rec.extra),
    )


def _record(row: sqlite3.Row) -> PredictionRecord:
    return PredictionRecord(
        id=uuid.UUID(row["id"]),
        created=_from_us(row["created_us"]),
        model=row["model"],
        version=row["version"],
        digit=row["digit"],
        confidence=row["confidence"],
        probabilities=tuple(json.loads(row["probabilities"])),
        pixels=bytes(row["pixels"]),
        latency_ms=row["latency_ms"],
        image=None if row["image"] is None else bytes(row["image"]),
        image_type=row["image_type"],
        client=row["client"],
        request_id=row["request_id"],
        label=row["label"],
        extra=json.loads(row["extra"]),
    )


class SqliteStore:
    """Predictions in one SQLite file (WAL); safe across threads and processes."""

    backend = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._set_up(self._conn())

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. Two workers opening a brand-new file at once: switching the journal
        mode can answer "database is locked" at once, without waiting in busy_timeout (seen in a test run,
        where it failed a worker's boot and so halted gunicorn); that is retried until busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.01
        while True:
            try:
                # WAL is a property of the file: set once here, every later connection inherits it.
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                with conn:
                    conn.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        if mode.lower() != "wal":
            log.warning("sqlite journal_mode is %s, not wal (path %s)", mode, self.path)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit, transactions are explicit (BEGIN IMMEDIATE for writes, so a
        # writer takes the lock up front and waits in busy_timeout instead of failing on upgrade).
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        # Under steady writes from several processes the WAL can outgrow its checkpoints; cut it back.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared by concurrent threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreUnavailable("the SQLite store is closed")
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (disk full) already rolled back
                conn.execute("ROLLBACK")
            raise
        return cur.rowcount

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            metrics.STORE_ERRORS.labels(backend=self.backend, operation="read").inc()
            raise StoreUnavailable(f"SQLite read failed ({self.path}): {exc}") from exc

    # --- writes (errors propagate: the write queue counts, retries and logs them) ---

    def record(self, rec: PredictionRecord) -> None:
        """Persist one record (an upsert by id)."""
        self.record_many([rec])

    def record_many(self, recs: Iterable[PredictionRecord]) -> None:
        """Persist several records in one transaction (what the write queue uses).

        A file that cannot be written now (locked past busy_timeout, read-only, gone, disk full) raises
        `StoreUnavailable`; a record that cannot be stored at all raises its own error.
        """
        rows = [_row(rec) for rec in recs]
        try:
            self._write(UPSERT, rows)
        except sqlite3.OperationalError as exc:
            raise SqliteUnavailable(f"SQLite write failed ({self.path}): {exc}") from exc

    def set_label(self, record_id: uuid.UUID, label: int) -> bool:
        """Store the true digit for a record; False when the id is unknown."""
        try:
            changed = self._write(
                "UPDATE predictions SET label = ? WHERE id = ?", [(int(label), str(record_id))]
            )
        except sqlite3.Error as exc:
            metrics.STORE_ERRORS.labels(backend=self.backend, operation="label").inc()
            raise StoreUnavailable(f"SQLite write failed ({self.path}): {exc}") from exc
        return changed > 0

    # --- reads ---

    def get(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """One record by id, or None."""
        rows = self._read(f"SELECT {COLUMNS} FROM predictions WHERE id = ?", (str(record_id),))
        return _record(rows[0]) if rows else None

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
        where: list[str] = []
        params: list[Any] = []
        if before is not None:
            if before_id is None:
                where.append("created_us < ?")
                params.append(_to_us(before))
            else:
                where.append("(created_us < ? OR (created_us = ? AND id < ?))")
                params += [_to_us(before), _to_us(before), str(before_id)]
        if digit is not None:
            where.append("digit = ?")
            params.append(int(digit))
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if not shadows:  # a JSON true reads as 1; absent as NULL
            where.append("json_extract(extra, '$.shadow') IS NOT 1")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {COLUMNS} FROM predictions {clause} ORDER BY created_us DESC, id DESC LIMIT ?"
        return [_record(row) for row in self._read(sql, (*params, max(0, int(limit))))]

    def labelled(self) -> Iterator[PredictionRecord]:
        """Every labelled record, oldest first, streamed in chunks on a connection of its own."""
        conn = self._connect()
        try:
            cur = conn.execute(
                f"SELECT {COLUMNS} FROM predictions WHERE label IS NOT NULL ORDER BY created_us, id"
            )
            while chunk := cur.fetchmany(500):
                yield from (_record(row) for row in chunk)
        except sqlite3.Error as exc:
            metrics.STORE_ERRORS.labels(backend=self.backend, operation="read").inc()
            raise StoreUnavailable(f"SQLite read failed ({self.path}): {exc}") from exc
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        """A real one-row write: proves the file is writable and the lock obtainable, in well under 1 ms."""
        details: dict[str, Any] = {"backend": self.backend, "path": str(self.path)}
        try:
            self._write(
                "INSERT OR REPLACE INTO store_health (id, checked_us) VALUES (1, ?)",
                [(_to_us(datetime.now(UTC)),)],
            )
        except (sqlite3.Error, StoreUnavailable) as exc:
            metrics.STORE_ERRORS.labels(backend=self.backend, operation="health").inc()
            return {**details, "ok": False, "status": "down", "error": str(exc)}
        return {**details, "ok": True, "status": "ok"}

    def close(self) -> None:
        """Close every thread's connection (at shutdown, after the write queue has drained)."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
