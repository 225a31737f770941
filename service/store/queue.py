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
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence

from service import metrics, tracing
from service.store.base import PredictionRecord, Store

log = logging.getLogger(__name__)

OVERFLOW_LOG_INTERVAL_S = 10.0


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
    ) -> None:
        self.store = store
        self.backend: str = getattr(store, "backend", type(store).__name__.lower())
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=maxsize)
        # Records accepted but not yet in the store, so a read right after a prediction can still find it.
        self._pending: dict[uuid.UUID, PredictionRecord] = {}
        self._pending_lock = threading.Lock()  # also guards the written/failed counters
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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
        """Queue a record; when the queue is full (or draining), write it here and now."""
        with self._pending_lock:
            self._pending[rec.id] = rec
        with self._state_lock:  # so no record slips into the queue after drain() has emptied it
            if not self._stop.is_set():
                try:
                    self._queue.put_nowait(rec)
                    metrics.WRITE_QUEUE_DEPTH.set(self._queue.qsize())
                    return
                except queue.Full:
                    self._overflowed()
        self._write([rec], retries=2)

    def pending(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """A record accepted by `put` that the store may not have yet."""
        with self._pending_lock:
            return self._pending.get(record_id)

    def flush(self, timeout: float) -> bool:
        """Wait until every record queued so far is stored (e.g. before feedback on a new id); True if so."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.002)
        return not self._queue.unfinished_tasks

    def drain(self, timeout: float) -> int:
        """Write everything still queued and stop the thread; returns the records stored meanwhile."""
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
        if self._queue.unfinished_tasks:
            with self._pending_lock:
                ids = [str(i) for i in self._pending]
            log.error(
                "write queue not drained within %.1fs: %d records not stored",
                timeout,
                len(ids),
                extra={"record_ids": ids},
            )
        metrics.WRITE_QUEUE_DEPTH.set(self._queue.qsize())
        return self.written - before

    # --- the writer thread ---

    def _run(self) -> None:
        while True:
            batch = self._take(block=True)
            if batch:
                with tracing.store_write(batch, self.backend):
                    self._write(batch, self.retries)
                self._done(len(batch))
            elif self._stop.is_set():
                return

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
        """Store a batch, retrying; then record by record; a record that cannot be stored is logged."""
        if self._attempts(batch, retries, deadline):
            return
        if len(batch) > 1:  # isolate the record(s) that cannot be written
            for rec in batch:
                if not self._attempts([rec], 1, deadline):
                    self._give_up(rec)
        else:
            self._give_up(batch[0])

    def _attempts(self, batch: Sequence[PredictionRecord], retries: int, deadline: float | None) -> bool:
        """Try the write up to `retries` times with backoff; True when it succeeded."""
        delay = self.backoff_s
        for attempt in range(1, retries + 1):
            started = time.perf_counter()
            try:
                record_many = getattr(self.store, "record_many", None)
                if record_many is not None:
                    record_many(batch)
                else:
                    for rec in batch:
                        self.store.record(rec)
            except Exception as exc:  # any backend error: counted, logged, retried; never swallowed
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
            with self._pending_lock:
                self.written += len(batch)
                for rec in batch:
                    self._pending.pop(rec.id, None)
            return True
        return False

    def _give_up(self, rec: PredictionRecord) -> None:
        with self._pending_lock:
            self._pending.pop(rec.id, None)
            self.failed += 1
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
