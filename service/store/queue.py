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

from service import metrics, tracing
from service.store.base import PredictionRecord, Store
from service.store.peers import WriteNotices

log = logging.getLogger(__name__)

OVERFLOW_LOG_INTERVAL_S = 10.0
LOST_REMEMBERED = 1024  # ids given up on, so `await_written` can say False rather than "written"


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
    ) -> None:
        self.store = store
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
            self._accepted += 1
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
        if self.notices is not None:
            self.notices.close()
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
                self.store.record_many(batch)
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
            with self._settled:
                self.written += len(batch)
                self._settle(batch)
            if self.notices is not None:
                self.notices.announce()
            return True
        return False

    def _settle(self, recs: Sequence[PredictionRecord]) -> None:
        """Records leave _pending (the caller holds _settled); wake whoever waits for them."""
        for rec in recs:
            self._pending.pop(rec.id, None)
        self._settled_count += len(recs)
        self._settled.notify_all()

    def _give_up(self, rec: PredictionRecord) -> None:
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
