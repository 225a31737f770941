"""`SpooledStore(inner, spool)`: any `Store` behind a durable local spool, so an outage costs no records.

- Writes go to `inner`; the records of a write that raises `StoreUnavailable` go to the spool instead
  (only the failed ones of a `PartialWrite`). While the spool holds records, new records join it behind them,
  so they reach the store in the order they came.
- A background thread replays the spool oldest first once `inner` takes writes again, and adopts the spool
  files of processes that are gone. Every write is an upsert of the same keys, so replaying a record that
  did reach the store is harmless.
- Reads go to `inner` only: during an outage they raise `StoreUnavailable` (HTTP 503), and records still in
  the spool appear once replayed.
- `health()` is `inner`'s, plus the spool: "degraded" while the store is not ok or records are waiting,
  but always `ok` (a prediction can still be recorded, in the spool).

The inner store only maps records to its database; this module is the only one that knows about outages.
Create it in the process that uses it (each gunicorn worker, after fork): the replay thread does not
survive a fork.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from service import metrics
from service.errors import StoreUnavailable
from service.store.base import PartialWrite, PredictionRecord, Store
from service.store.spool import Spool

log = logging.getLogger(__name__)

# Records per replay write: while the spool is non-empty the replay carries every new write too.
REPLAY_CHUNK = 1024
REPLAY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
ORPHAN_SCAN_INTERVAL_S = 30.0
IDLE_WAKE_S = 1.0  # the replay thread looks at the spool at least this often

S = TypeVar("S", bound=Store)


class SpooledStore(Generic[S]):
    """`inner` with outage detection, spooling and replay; a `Store` itself. Thread-safe."""

    def __init__(self, inner: S, spool: Spool) -> None:
        self.inner = inner
        self.spool = spool
        self.backend = inner.backend
        self.last_error: str | None = None  # the latest outage seen, for logs and tests
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._replayed = threading.Condition()  # notified whenever the spool shrinks
        self._replayer = threading.Thread(target=self._replay_loop, name="spool-replayer", daemon=True)
        self._replayer.start()

    # --- writes ---

    def record(self, rec: PredictionRecord) -> None:
        """Persist one record; on an outage it goes to the spool instead (never raises for an outage)."""
        self.record_many([rec])

    def record_many(self, recs: Sequence[PredictionRecord]) -> None:
        """Persist records in `inner`; those it cannot take now are spooled (one fsync per group)."""
        if not recs:
            return
        if self.spool.depth:
            self._keep(recs)  # behind the records already waiting: replayed in order
            return
        try:
            self.inner.record_many(recs)
        except PartialWrite as exc:
            self._outage("write", exc)
            self._keep(exc.failed)
        except StoreUnavailable as exc:
            self._outage("write", exc)
            self._keep(recs)

    def keep(self, recs: Sequence[PredictionRecord]) -> list[PredictionRecord]:
        """Spool records without trying the store (a drain out of time); returns those over the size cap."""
        refused = self.spool.append(recs)
        self._wake.set()
        return refused

    def replay_before_exit(self, timeout: float) -> bool:
        """Keep replaying (this process's spool and any orphan) until it is empty or `timeout` passes.

        For a spool that does not outlive its process's volume (a pod's emptyDir): True if emptied.
        """
        self.spool.adopt_orphans()
        waiting = self.spool.depth
        if not waiting:
            return True
        started = time.monotonic()
        log.info("replaying %d spooled records before exit (up to %.0fs)", waiting, timeout)
        emptied = self.wait_for_replay(timeout)
        elapsed = time.monotonic() - started
        if emptied:
            log.info("spool replayed before exit: %d records in %.1fs", waiting, elapsed)
        else:
            log.error(
                "spool not replayed within %.0fs of exit: %d records stay in %s (lost unless a process "
                "starts on this folder again)",
                timeout,
                self.spool.depth,
                self.spool.directory,
                extra={"spool_depth": self.spool.depth},
            )
        return emptied

    def _keep(self, recs: Sequence[PredictionRecord]) -> None:
        self.spool.append(recs)  # records over the size cap are counted and logged by the spool
        self._wake.set()

    def _outage(self, operation: str, exc: StoreUnavailable) -> None:
        metrics.STORE_ERRORS.labels(backend=self.backend, operation=operation).inc()
        message = f"{type(exc).__name__}: {exc}"
        if message != self.last_error:
            log.warning("%s store %s failed, records go to the spool: %s", self.backend, operation, message)
        self.last_error = message

    # --- the replay thread ---

    def _replay_loop(self) -> None:
        """Keeps replaying whatever goes wrong: a bug here must not silently stop the spool draining."""
        while not self._stop.is_set():
            try:
                self._replay()
            except Exception:  # logged with its traceback, then the loop starts over after a pause
                log.exception("spool replay thread failed; restarting it in %ss", REPLAY_BACKOFF_S[-1])
                self._stop.wait(REPLAY_BACKOFF_S[-1])

    def _replay(self) -> None:
        """Adopt the spools of dead processes now and then; replay the spool oldest first."""
        failures = 0
        next_orphan_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL_S
        while not self._stop.is_set():
            if time.monotonic() >= next_orphan_scan:
                self.spool.adopt_orphans()
                next_orphan_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL_S
            chunk = self.spool.oldest(REPLAY_CHUNK)
            if not chunk:
                self._wake.wait(IDLE_WAKE_S)
                self._wake.clear()
                continue
            failed: set[uuid.UUID] = set()
            try:
                self.inner.record_many([s.record for s in chunk])
            except PartialWrite as exc:
                self._outage("replay", exc)
                failed = {rec.id for rec in exc.failed}
            except StoreUnavailable as exc:
                self._outage("replay", exc)
                failed = {s.record.id for s in chunk}
            done = [s for s in chunk if s.record.id not in failed]
            if done:
                self.spool.remove(done)
                with self._replayed:
                    self._replayed.notify_all()
                if not self.spool.depth:
                    log.info(
                        "spool replayed: %d records written to %s since start",
                        self.spool.replayed,
                        self.backend,
                    )
            if failed:
                metrics.SPOOL_FAILED.inc(len(failed))
                failures += 1
                self._stop.wait(REPLAY_BACKOFF_S[min(failures, len(REPLAY_BACKOFF_S)) - 1])
            else:
                failures = 0

    def wait_for_replay(self, timeout: float) -> bool:
        """Block until the spool is empty (tests, benchmarks); True if it emptied in time."""
        self._wake.set()
        with self._replayed:
            return self._replayed.wait_for(lambda: self.spool.depth == 0, timeout)

    # --- reads: the inner store's, with the spool named in an outage ---

    def _unavailable(self, exc: StoreUnavailable) -> StoreUnavailable:
        return StoreUnavailable(
            f"{exc.message} Predictions are still answered and their records kept in the local spool "
            f"({self.spool.depth} waiting)."
        )

    def get(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """One record by id, or None (a record still in the spool is not found yet)."""
        try:
            return self.inner.get(record_id)
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    def list(
        self,
        limit: int = 50,
        before: datetime | None = None,
        digit: int | None = None,
        model: str | None = None,
        before_id: uuid.UUID | None = None,
        shadows: bool = False,
    ) -> list[PredictionRecord]:
        """The inner store's history (records still in the spool appear once replayed)."""
        try:
            return self.inner.list(
                limit=limit, before=before, digit=digit, model=model, before_id=before_id, shadows=shadows
            )
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    def set_label(self, record_id: uuid.UUID, label: int) -> bool:
        """Feedback needs the store itself: during an outage it raises `StoreUnavailable`."""
        try:
            return self.inner.set_label(record_id, label)
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    def labelled(self) -> Iterator[PredictionRecord]:
        """Every labelled record of the inner store."""
        try:
            yield from self.inner.labelled()
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    # --- health and shutdown ---

    def health(self) -> dict[str, Any]:
        """The inner store's health plus the spool; ok while a record can be kept somewhere."""
        inner = self.inner.health()
        details: dict[str, Any] = {
            **inner,
            "spool_depth": self.spool.depth,
            "spool_bytes": self.spool.bytes,
            "spool_rejected": self.spool.rejected,
            "spool_replayed": self.spool.replayed,
        }
        if details["spool_bytes"] >= self.spool.max_bytes * 0.99:
            details["spool_full"] = True
        status = "ok" if inner.get("status") == "ok" and details["spool_depth"] == 0 else "degraded"
        return {**details, "ok": True, "status": status}

    def close(self) -> None:
        """Stop replaying (what is left stays on disk for the next process), close the inner store."""
        self._stop.set()
        self._wake.set()
        self._replayer.join(10)
        self.spool.close()
        self.inner.close()
