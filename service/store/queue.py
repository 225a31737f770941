"""Write-behind queue: predictions leave the request path here and reach the store in batches.

- `put()` never waits on the store while there is room. When the queue is full the record is
  written synchronously in the calling thread instead: that request is slower, but nothing is dropped. Each
  overflow is counted in `mnist_write_queue_overflow_total` and logged (a warning at most every 10 s, with
  the count).
- A daemon thread takes up to `batch_size` records per transaction. A failing write is counted in
  `mnist_store_errors_total{operation="write"}` and retried with exponential backoff; after `retries` attempts
  the batch is written record by record so one bad record cannot hold the others, and a record that still
  fails is logged at ERROR with its id.
- `drain(timeout)` (SIGTERM: gunicorn's `worker_exit` hook) writes everything still queued, then stops.
  What has not reached the store by the deadline is never dropped: behind a `SpooledStore` (Cassandra) it
  goes to the local spool, replayed by the next process on the same spool folder; SQLite, a local file, is
  written past the deadline. With `spool_drain_s`, the worker then keeps replaying its spool that long
  (a spool on a pod's emptyDir dies with the pod).
- Durability (`MNIST_DURABILITY`): `put_many` returns once the records are in memory (memory), in this
  process's journal, fsynced in groups across concurrent requests (disk, journal.py), or in the store
  (store). The journal of a process that is gone is replayed into the store by the next writer thread
  that starts on the same folder, whatever its own mode.
- `await_written(id, timeout)` and `flush(timeout)` wait on a condition the writer notifies after every
  batch, so feedback on a record this worker has just answered goes ahead the moment the record is stored.
- `find(id, timeout)` is how a read looks a record up: queued here, in the store, or, for a brand-new id
  another worker answered, once that worker's write notice (`peers.py`) says it stored a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from service import metrics, tracing
from service.errors import StoreUnavailable
from service.store import journal as journals
from service.store.base import PredictionRecord, Store
from service.store.journal import Journal
from service.store.peers import WriteNotices
from service.store.spool import Spooled, SpoolFile, decode
from service.store.spooled import SpooledStore

log = logging.getLogger(__name__)

OVERFLOW_LOG_INTERVAL_S = 10.0
LOST_REMEMBERED = 1024  # ids given up on, so `await_written` can say False rather than "written"
ORPHAN_SCAN_INTERVAL_S = 30.0  # how often the writer looks for journals of processes that are gone
REPLAY_CHUNK = 256

Durability = Literal["memory", "disk", "store"]


class WriteQueue:
    """A bounded queue in front of a `Store`, emptied by one background thread in batches."""

    def __init__(
        self,
        store: Store,
        maxsize: int,
        *,
        batch_size: int = 256,
        retries: int = 5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        notices: WriteNotices | None = None,
        durability: Durability = "memory",
        journal_dir: Path | None = None,
        journal_max_bytes: int = 1 << 30,
        ack_timeout_s: float = 10.0,
        spool_drain_s: float = 0.0,
    ) -> None:
        self.store = store
        self.durability = durability
        self.ack_timeout_s = ack_timeout_s
        self.spool_drain_s = spool_drain_s
        # Where journals live (this process's in disk mode; gone processes' ones in every mode).
        self.journal_dir = journal_dir
        self.journal: Journal | None = None
        if durability == "disk":
            if journal_dir is None:
                raise ValueError("durability 'disk' needs a journal folder (MNIST_SPOOL_DIR)")
            self.journal = Journal(journal_dir, journal_max_bytes)
        self.notices = notices  # None: a worker without siblings, or no socket possible
        self.backend = store.backend
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=maxsize)
        # Records accepted but not yet in the store, so a read right after a prediction can still find it.
        self._pending: dict[uuid.UUID, PredictionRecord] = {}
        self._pending_lock = threading.Lock()  # also guards the written/failed counters
        # Notified (under _pending_lock) whenever records leave _pending: stored, or given up on.
        self._settled = threading.Condition(self._pending_lock)
        self._lost: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._accepted = 0  # records put so far; with _settled_count, what flush() waits for
        self._settled_count = 0
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # drain's deadline passed: the writer takes no more records
        self._thread: threading.Thread | None = None
        self._journal_scan_at = 0.0
        self._overflow_since_log = 0
        self._overflow_logged_at = 0.0
        self.written = 0  # records stored since start, by the thread or by overflow
        self.failed = 0  # records given up on (each logged at ERROR with its id)

    @property
    def depth(self) -> int:
        """Records waiting for the background thread."""
        return self._queue.qsize()

    def start(self) -> WriteQueue:
        """Start the writer thread (in each worker, after fork: threads do not survive a fork)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()
        return self

    def put(self, rec: PredictionRecord) -> None:
        """Queue one record (see `put_many`)."""
        self.put_many([rec])

    def put_many(self, recs: Sequence[PredictionRecord]) -> None:
        """Queue the records of one answer, returning once they are as durable as `durability` asks.

        Raises `StoreUnavailable` (503) when the journal cannot take them (disk) or the store has not
        acknowledged them within `ack_timeout_s` (store).
        """
        if not recs:
            return
        # Before anything else: a record that is queued is also journaled. Once draining, records are
        # written in this thread instead (below): stored before the answer, and the journal is closing.
        if self.journal is not None and not self._stop.is_set():
            self.journal.write(recs)
        with self._pending_lock:
            for rec in recs:
                if rec.id not in self._pending:  # each pending id settles once: counted once
                    self._accepted += 1
                self._pending[rec.id] = rec
        overflow: list[PredictionRecord] = []
        with self._state_lock:  # so no record slips into the queue after drain() has emptied it
            for rec in recs:
                if self._stop.is_set():
                    overflow.append(rec)
                    continue
                try:
                    self._queue.put_nowait(rec)
                except queue.Full:
                    self._overflowed()
                    overflow.append(rec)
            metrics.WRITE_QUEUE_DEPTH.set(self._queue.qsize())
        if overflow:
            self._write(overflow, retries=2)
        if self.durability == "store" and not self._await_all([r.id for r in recs], self.ack_timeout_s):
            raise StoreUnavailable(
                f"the {self.backend} store did not acknowledge the prediction record within "
                f"{self.ack_timeout_s:g}s (MNIST_DURABILITY=store); it is still queued and may appear later"
            )

    def _await_all(self, ids: Sequence[uuid.UUID], timeout: float) -> bool:
        """True once every id has been stored (False: timeout, or one was given up on)."""
        with self._settled:
            if not self._settled.wait_for(lambda: all(i not in self._pending for i in ids), timeout):
                return False
            return not any(i in self._lost for i in ids)

    def pending(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """A record accepted by `put` that the store may not have yet."""
        with self._pending_lock:
            return self._pending.get(record_id)

    def await_written(self, record_id: uuid.UUID, timeout: float) -> bool:
        """Wait until the writer has stored the record `put` with this id; True once it is in the store.

        False when `timeout` passes first, or when the record was given up on. An id this queue never held
        (or stored long ago) has nothing to wait for: True at once.
        """
        with self._settled:
            if not self._settled.wait_for(lambda: record_id not in self._pending, timeout):
                return False
            return record_id not in self._lost

    def find(self, record_id: uuid.UUID, timeout: float) -> PredictionRecord | None:
        """The record: still queued here, in the store, or stored by a sibling worker within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.notices.generation if self.notices else 0  # before the read: no notice slips by
            rec = self.pending(record_id) or self.store.get(record_id)
            remaining = deadline - time.monotonic()
            if rec is not None or self.notices is None or remaining <= 0:
                return rec
            if not self.notices.wait(seen, remaining):
                return None

    def flush(self, timeout: float) -> bool:
        """Wait until every record queued so far has been stored or given up on; True if so in time."""
        with self._settled:
            target = self._accepted
            return self._settled.wait_for(lambda: self._settled_count >= target, timeout)

    def drain(self, timeout: float) -> int:
        """Write everything still queued and stop the thread; returns the records stored meanwhile.

        Records not stored by the deadline are handed over (`_hand_over`), never dropped.
        """
        deadline = time.monotonic() + timeout
        before = self.written
        with self._state_lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is None or not self._thread.is_alive():
            # Never started (or done): whatever is left is written here, within the same deadline.
            while batch := self._take(block=False):
                self._write(batch, self.retries, deadline)
                self._done(len(batch))
        else:
            self._abandon.set()  # the writer finishes the batch it holds, then takes no more
        with self._pending_lock:
            left = list(self._pending.values())  # queued, in the writer's hands, or failed by the deadline
        if left:
            self._hand_over(left, timeout)
        if self.spool_drain_s > 0 and isinstance(self.store, SpooledStore):
            self.store.replay_before_exit(self.spool_drain_s)
        metrics.WRITE_QUEUE_DEPTH.set(self._queue.qsize())
        if self.journal is not None:
            self.journal.close()
        if self.notices is not None:
            self.notices.close()
        return self.written - before

    def _hand_over(self, left: Sequence[PredictionRecord], timeout: float) -> None:
        """Records the store did not take by the drain deadline: to the journal's next reader, the spool,
        or (SQLite, a local file) written now."""
        journaled = [r for r in left if self.journal is not None and self.journal.holds(r.id)]
        rest = [r for r in left if self.journal is None or not self.journal.holds(r.id)]
        if journaled:
            log.warning(
                "write queue not drained within %.1fs: %d records stay in the journal %s for the next start",
                timeout,
                len(journaled),
                self.journal.file.path if self.journal else "",
            )
        if not rest:
            return
        if isinstance(self.store, SpooledStore):
            refused = self.store.keep(rest)  # one fsync; a record over the cap is logged with its id
            with self._settled:
                self._settle(rest)
            log.warning(
                "write queue not drained within %.1fs: %d records kept in the spool %s for the next start",
                timeout,
                len(rest) - len(refused),
                self.store.spool.directory,
                extra={"spooled": len(rest) - len(refused), "refused": len(refused)},
            )
            return
        started = time.monotonic()
        self._write(rest, self.retries)  # no deadline: a local file, and the only copy of these records
        log.warning(
            "write queue not drained within %.1fs: %d records written after it in %.2fs",
            timeout,
            len(rest),
            time.monotonic() - started,
        )

    # --- the writer thread ---

    def _run(self) -> None:
        while not self._abandon.is_set():
            if time.monotonic() >= self._journal_scan_at:
                self._replay_journals()
                self._journal_scan_at = time.monotonic() + ORPHAN_SCAN_INTERVAL_S
            batch = self._take(block=True)
            if batch:
                with tracing.store_write(batch, self.backend):
                    self._write(batch, self.retries)
                self._done(len(batch))
            elif self._stop.is_set():
                return

    def _replay_journals(self) -> None:
        """Write the journals of processes that are gone into the store (their answers were sent)."""
        if self.journal_dir is None or self._stop.is_set():
            return
        held = {self.journal.file.path.with_suffix(".lock")} if self.journal else set()
        try:
            found = journals.orphans(self.journal_dir, held)
        except OSError as exc:
            log.error("cannot look for journals in %s: %s", self.journal_dir, exc)
            return
        for journal_file in found:
            self._replay_journal(journal_file)

    def _replay_journal(self, journal_file: SpoolFile) -> None:
        started, total = time.monotonic(), journal_file.depth
        while not self._abandon.is_set():
            rows = journal_file.oldest(REPLAY_CHUNK)
            if not rows:
                journal_file.close(delete=True)
                log.info(
                    "journal %s replayed: %d records written to %s in %.2fs",
                    journal_file.path,
                    total,
                    self.backend,
                    time.monotonic() - started,
                )
                return
            items = [Spooled(journal_file, seq, len(payload), decode(payload)) for seq, payload in rows]
            if not self._attempts([i.record for i in items], self.retries, None):
                break  # the store refuses them now: the file is released and adopted again later
            journal_file.remove(items, sync=False)
        log.warning("journal %s keeps %d records for a later replay", journal_file.path, journal_file.depth)
        journal_file.close(delete=False)

    def _take(self, block: bool) -> list[PredictionRecord]:
        """Up to batch_size records; waits briefly for the first one when `block`."""
        batch: list[PredictionRecord] = []
        try:
            batch.append(self._queue.get(timeout=0.1) if block else self._queue.get_nowait())
            while len(batch) < self.batch_size:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _done(self, n: int) -> None:
        for _ in range(n):
            self._queue.task_done()
        metrics.WRITE_QUEUE_DEPTH.set(self._queue.qsize())

    def _write(self, batch: Sequence[PredictionRecord], retries: int, deadline: float | None = None) -> None:
        """Store a batch, retrying; then record by record; a record that cannot be stored is logged.

        With a deadline (drain), a batch still failing when it is near stays pending for `_hand_over`.
        """
        errors: list[Exception] = []
        if self._attempts(batch, retries, deadline, errors):
            return
        if deadline is not None and time.monotonic() + self.backoff_s > deadline:
            return
        if len(batch) > 1:  # isolate the record(s) that cannot be written
            for rec in batch:
                errors = []
                if not self._attempts([rec], 1, deadline, errors):
                    self._give_up(rec, errors[-1] if errors else None)
        else:
            self._give_up(batch[0], errors[-1] if errors else None)

    def _attempts(
        self,
        batch: Sequence[PredictionRecord],
        retries: int,
        deadline: float | None,
        errors: list[Exception] | None = None,
    ) -> bool:
        """Try the write up to `retries` times with backoff; True when it succeeded (failures: `errors`)."""
        delay = self.backoff_s
        for attempt in range(1, retries + 1):
            started = time.perf_counter()
            try:
                self.store.record_many(batch)
            except Exception as exc:  # any backend error: counted, logged, retried; never swallowed
                if errors is not None:
                    errors.append(exc)
                metrics.STORE_ERRORS.labels(backend=self.backend, operation="write").inc()
                log.warning(
                    "store write of %d records failed (attempt %d/%d): %s", len(batch), attempt, retries, exc
                )
                if attempt == retries or (deadline is not None and time.monotonic() + delay > deadline):
                    return False
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            metrics.STORE_WRITE_DURATION.labels(backend=self.backend).observe(time.perf_counter() - started)
            if self.journal is not None:
                self.journal.forget(batch)
            with self._settled:
                self.written += len(batch)
                self._settle(batch)
            if self.notices is not None:
                self.notices.announce()
            return True
        return False

    def _settle(self, recs: Sequence[PredictionRecord]) -> None:
        """Records leave _pending (the caller holds _settled); wake whoever waits for them.

        Only records that were pending count for `flush`: a replayed journal's, or a second write of the same
        record (a drain's hand-over racing the writer), must not make it return early."""
        for rec in recs:
            if self._pending.pop(rec.id, None) is not None:
                self._settled_count += 1
        self._settled.notify_all()

    def _give_up(self, rec: PredictionRecord, error: Exception | None) -> None:
        if self.journal is not None:
            if isinstance(error, StoreUnavailable) and self.journal.holds(rec.id):
                # An outage of a store without a spool (SQLite locked or unwritable): the journal keeps
                # the record, and the next process on this folder writes it.
                with self._settled:
                    self._settle([rec])
                log.error(
                    "prediction record %s not stored (%s): kept in the journal for the next start",
                    rec.id,
                    error,
                    extra={"record_id": str(rec.id)},
                )
                return
            self.journal.forget([rec])  # a record the store refuses, not an outage
        with self._settled:
            self.failed += 1
            self._lost[rec.id] = None
            while len(self._lost) > LOST_REMEMBERED:
                self._lost.popitem(last=False)
            self._settle([rec])
        log.error("prediction record %s could not be stored: lost", rec.id, extra={"record_id": str(rec.id)})

    def _overflowed(self) -> None:
        metrics.WRITE_QUEUE_OVERFLOW.inc()
        self._overflow_since_log += 1
        now = time.monotonic()
        if now - self._overflow_logged_at >= OVERFLOW_LOG_INTERVAL_S:
            log.warning(
                "write queue full (%d records): %d records written synchronously in request threads",
                self._queue.maxsize,
                self._overflow_since_log,
            )
            self._overflow_logged_at = now
            self._overflow_since_log = 0
