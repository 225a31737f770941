"""Durable local spool: prediction records the store could not take wait here until it is back.

`SpooledStore` (spooled.py) decides what goes in and replays it; this module only keeps records on disk.

- Each process appends to its own SQLite file `spool-<ms>-<pid>-<rand>.db` in the spool directory and
  holds an exclusive flock on the matching `.lock` file for as long as it lives. A `.lock` that can be locked
  belongs to a process that is gone (crashed, killed, scaled down): any live process adopts and replays
  that file.
- `append()` writes one group of records in one transaction with `synchronous=FULL`: one fsync per group
  (the write queue hands over up to 256 records at a time), and the records are on disk when it returns.
- Oldest first: files in the order they were created, rows in the order they were appended.
- The size cap covers every file this process holds; a record over the cap is refused, counted in
  `mnist_spool_rejected_total` and logged with its id, never dropped silently.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from service import metrics
from service.store.base import PredictionRecord

log = logging.getLogger(__name__)

SCHEMA = "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)"


def encode(rec: PredictionRecord) -> bytes:
    """A record as JSON bytes (binary fields in base64): readable with sqlite3 when debugging an outage."""
    return json.dumps(
        {
            "id": str(rec.id),
            "created": rec.created.isoformat(),
            "model": rec.model,
            "version": rec.version,
            "digit": rec.digit,
            "confidence": rec.confidence,
            "probabilities": list(rec.probabilities),
            "pixels": base64.b64encode(rec.pixels).decode(),
            "latency_ms": rec.latency_ms,
            "image": None if rec.image is None else base64.b64encode(rec.image).decode(),
            "image_type": rec.image_type,
            "client": rec.client,
            "request_id": rec.request_id,
            "label": rec.label,
            "extra": rec.extra,
        },
        separators=(",", ":"),
    ).encode()


def decode(payload: bytes) -> PredictionRecord:
    """The inverse of `encode`."""
    d: dict[str, Any] = json.loads(payload)
    return PredictionRecord(
        id=uuid.UUID(d["id"]),
        created=datetime.fromisoformat(d["created"]),
        model=d["model"],
        version=d["version"],
        digit=d["digit"],
        confidence=d["confidence"],
        probabilities=tuple(d["probabilities"]),
        pixels=base64.b64decode(d["pixels"]),
        latency_ms=d["latency_ms"],
        image=None if d["image"] is None else base64.b64decode(d["image"]),
        image_type=d["image_type"],
        client=d["client"],
        request_id=d["request_id"],
        label=d["label"],
        extra=d["extra"],
    )


@dataclass(frozen=True)
class Spooled:
    """A record read back from the spool, with where it lives so it can be removed once stored."""

    file: SpoolFile
    seq: int
    size: int
    record: PredictionRecord


class SpoolFile:
    """One spool database and the flock that says who owns it."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.lock = threading.Lock()  # one connection, shared by the writer, replayer and health threads
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit (= every group)
        self.conn.execute(SCHEMA)
        count, size = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM spool"
        ).fetchone()
        self.depth = int(count)
        self.bytes = int(size)

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Add payloads in one transaction (one fsync); returns their seqs, in order."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT INTO spool (payload) VALUES (?)", [(p,) for p in payloads])
                # One writer inside BEGIN IMMEDIATE and AUTOINCREMENT: the new seqs are consecutive.
                last = int(self.conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.depth += len(payloads)
            self.bytes += sum(len(p) for p in payloads)
        return list(range(last - len(payloads) + 1, last + 1))

    def oldest(self, limit: int) -> list[tuple[int, bytes]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, payload FROM spool ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def remove(self, items: Sequence[Spooled], *, sync: bool = True) -> None:
        """Delete records; without `sync` the commit is not fsynced (a delete lost in a crash only means
        that record is written to the store once more, as the same row)."""
        with self.lock:
            if not sync:
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("DELETE FROM spool WHERE seq = ?", [(s.seq,) for s in items])
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            finally:
                if not sync:
                    self.conn.execute("PRAGMA synchronous=FULL")
            self.depth -= len(items)
            self.bytes -= sum(s.size for s in items)

    def close(self, delete: bool) -> None:
        """Close the database; with `delete`, remove its files (still holding the lock), then unlock."""
        with self.lock:
            self.conn.close()
        if delete:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
        os.close(self.lock_fd)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # the owner finished and deleted it between our open and lock
        os.close(fd)
        return None
    return fd


def create_own(directory: Path, prefix: str) -> SpoolFile:
    """A new file `<prefix>-<ms>-<pid>-<rand>.db` for this process, locked for as long as it lives."""
    name = f"{prefix}-{int(time.time() * 1000):013d}-{os.getpid()}-{secrets.token_hex(3)}"
    # Lock under a temporary name, then rename: an adopter never sees an unlocked new file.
    tmp = directory / f".{name}.lock.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(tmp, directory / f"{name}.lock")
    return SpoolFile(directory / f"{name}.db", fd)


def adopt(directory: Path, prefix: str, held: set[Path]) -> list[SpoolFile]:
    """The non-empty `<prefix>-*` files of processes that are gone, oldest first, now locked by us."""
    adopted: list[SpoolFile] = []
    for lock_path in sorted(directory.glob(f"{prefix}-*.lock")):
        if lock_path in held:
            continue
        fd = _try_lock(lock_path)
        if fd is None:
            continue
        try:
            spool_file = SpoolFile(lock_path.with_suffix(".db"), fd)
        except sqlite3.Error as exc:
            os.close(fd)
            log.error("cannot open orphaned %s %s: %s", prefix, lock_path.with_suffix(".db"), exc)
            continue
        if spool_file.depth == 0:
            spool_file.close(delete=True)
            continue
        log.warning(
            "adopted %s %s with %d records from a process that is gone",
            prefix,
            spool_file.path,
            spool_file.depth,
        )
        adopted.append(spool_file)
    return adopted


class Spool:
    """This process's spool file plus any it adopted from dead processes; thread-safe."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files_lock = threading.Lock()
        self.rejected = 0
        self.replayed = 0
        self.own = create_own(self.directory, "spool")
        self._files: list[SpoolFile] = [self.own]
        self.adopt_orphans()

    def adopt_orphans(self) -> int:
        """Take over the spool files of processes that are gone; returns how many records they hold."""
        with self._files_lock:
            held = {f.path.with_suffix(".lock") for f in self._files}
        found = adopt(self.directory, "spool", held)
        with self._files_lock:
            for spool_file in found:
                self._files.insert(-1, spool_file)  # older than our own file: replayed first
        self._publish()
        return sum(f.depth for f in found)

    @property
    def depth(self) -> int:
        """Records waiting in every file this process holds."""
        with self._files_lock:
            return sum(f.depth for f in self._files)

    @property
    def bytes(self) -> int:
        """Payload bytes waiting in every file this process holds."""
        with self._files_lock:
            return sum(f.bytes for f in self._files)

    def append(self, recs: Sequence[PredictionRecord]) -> list[PredictionRecord]:
        """Store records durably (one fsync for the group); returns those refused by the size cap."""
        accepted: list[bytes] = []
        refused: list[PredictionRecord] = []
        room = self.max_bytes - self.bytes
        for rec in recs:
            payload = encode(rec)
            if len(payload) <= room:
                accepted.append(payload)
                room -= len(payload)
            else:
                refused.append(rec)
        if accepted:
            self.own.append(accepted)
        if refused:
            self._refused(refused)
        self._publish()
        return refused

    def oldest(self, limit: int) -> list[Spooled]:
        """Up to `limit` of the oldest records, from the oldest file that has any."""
        with self._files_lock:
            files = list(self._files)
        for spool_file in files:
            if spool_file.depth == 0:
                continue
            rows = spool_file.oldest(limit)
            if rows:
                return [Spooled(spool_file, seq, len(payload), decode(payload)) for seq, payload in rows]
        return []

    def remove(self, items: Sequence[Spooled]) -> None:
        """Forget records now stored elsewhere; an adopted file that empties is deleted."""
        by_file: dict[int, list[Spooled]] = {}
        for item in items:
            by_file.setdefault(id(item.file), []).append(item)
        for group in by_file.values():
            spool_file = group[0].file
            spool_file.remove(group, sync=False)  # a lost delete: the same row again
            if spool_file is not self.own and spool_file.depth == 0:
                with self._files_lock:
                    self._files.remove(spool_file)
                spool_file.close(delete=True)
                log.info("replayed and removed adopted spool %s", spool_file.path)
        self.replayed += len(items)
        metrics.SPOOL_REPLAYED.inc(len(items))
        self._publish()

    def close(self) -> None:
        """Release the files: empty ones are deleted, the rest wait for the next process to adopt them."""
        with self._files_lock:
            files, self._files = self._files, []
        for spool_file in files:
            if spool_file.depth:
                log.warning(
                    "spool %s keeps %d records for the next process", spool_file.path, spool_file.depth
                )
            spool_file.close(delete=spool_file.depth == 0)
        metrics.SPOOL_DEPTH.set(0)
        metrics.SPOOL_BYTES.set(0)

    def _publish(self) -> None:
        metrics.SPOOL_DEPTH.set(self.depth)
        metrics.SPOOL_BYTES.set(self.bytes)

    def _refused(self, recs: Sequence[PredictionRecord]) -> None:
        metrics.SPOOL_REJECTED.inc(len(recs))
        self.rejected += len(recs)
        for rec in recs:
            log.error(
                "spool full (%d bytes, cap %d): record %s rejected",
                self.bytes,
                self.max_bytes,
                rec.id,
                extra={"record_id": str(rec.id)},
            )
