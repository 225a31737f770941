"""The journal of `MNIST_DURABILITY=disk`: an answered prediction's record is on disk before its answer.

- Each process appends to its own `journal-<ms>-<pid>-<rand>.db` in the spool folder (the spool's file
  format and flock ownership, spool.py), and the write queue deletes a record once the store has it.
- Group commit: concurrent requests hand their records to `GroupCommit`; one of them (the leader) writes
  everything waiting in one transaction, one fsync, while the others wait for it. A busy worker therefore
  pays one fsync per group of requests, not one per request.
- The journal of a process that is gone (SIGKILL, OOM kill, node loss) is adopted by the next process that
  starts on the same folder, in every durability mode, and replayed into the store (see queue.py). Store
  writes are upserts by id, so a record that did reach the store before the kill is the same row again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import StoreUnavailable
from service.store.base import PredictionRecord
from service.store.spool import Spooled, SpoolFile, adopt, create_own, encode

log = logging.getLogger(__name__)

PREFIX = "journal"


@dataclass
class _Ticket:
    """One caller's records in a group, and what became of them."""

    records: Sequence[PredictionRecord]
    result: list[Spooled] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    """Leader/follower group commit: whoever finds no commit running writes every waiting ticket at once."""

    def __init__(self, write: Callable[[Sequence[PredictionRecord]], list[Spooled]]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._busy = False
        self.groups = 0  # commits so far (records / groups = how many records each fsync carried)

    def commit(self, records: Sequence[PredictionRecord]) -> list[Spooled]:
        """Returns once `records` are durable (their handles, in order); raises what the write raised."""
        ticket = _Ticket(records)
        with self._cond:
            self._waiting.append(ticket)
            while self._busy and not ticket.done:
                self._cond.wait()
            if not ticket.done:  # nobody is writing and our ticket is still waiting: lead this group
                self._busy = True
                group, self._waiting = self._waiting, []
        if not ticket.done:
            self._lead(group)
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _lead(self, group: list[_Ticket]) -> None:
        flat = [rec for t in group for rec in t.records]
        try:
            handles = self._write(flat)
        except BaseException as exc:  # every member of the group learns it: none of them is durable
            for t in group:
                t.error = exc
        else:
            start = 0
            for t in group:
                t.result = handles[start : start + len(t.records)]
                start += len(t.records)
        with self._cond:
            self.groups += 1
            for t in group:
                t.done = True
            self._busy = False
            self._cond.notify_all()


class JournalFull(StoreUnavailable):
    """The journal holds MNIST_SPOOL_MAX_BYTES already: the store is far behind."""


class Journal:
    """This process's journal file; thread-safe."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.file = create_own(self.directory, PREFIX)
        self._group = GroupCommit(self._append)
        self._handles: dict[uuid.UUID, Spooled] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def depth(self) -> int:
        return self.file.depth

    @property
    def groups(self) -> int:
        return self._group.groups

    def write(self, records: Sequence[PredictionRecord]) -> None:
        """Make `records` durable (group commit); raises `StoreUnavailable` when they cannot be."""
        handles = self._group.commit(records)
        with self._lock:
            for h in handles:
                self._handles[h.record.id] = h

    def forget(self, records: Sequence[PredictionRecord]) -> None:
        """The store has these records: delete them from the journal (ids it never held are ignored)."""
        with self._lock:
            if self._closed:  # a writer stuck past the drain: what it held stays for the next start
                return
            done = [h for rec in records if (h := self._handles.pop(rec.id, None)) is not None]
            if done:
                self.file.remove(done, sync=False)

    def holds(self, record_id: uuid.UUID) -> bool:
        with self._lock:
            return record_id in self._handles

    def close(self) -> None:
        """Release the file: deleted when empty, else left for the next process on this folder to replay."""
        with self._lock:
            self._closed = True
        if self.file.depth:
            log.warning("journal %s keeps %d records for the next start", self.file.path, self.file.depth)
        self.file.close(delete=self.file.depth == 0)

    def _append(self, records: Sequence[PredictionRecord]) -> list[Spooled]:
        payloads = [encode(rec) for rec in records]
        size = sum(len(p) for p in payloads)
        if self.file.bytes + size > self.max_bytes:
            raise JournalFull(
                f"the journal holds {self.file.bytes} bytes (cap {self.max_bytes}): the store is too far "
                "behind to record more predictions durably"
            )
        seqs = self.file.append(payloads)
        triples = zip(seqs, payloads, records, strict=True)
        return [Spooled(self.file, seq, len(p), rec) for seq, p, rec in triples]


def orphans(directory: Path, held: set[Path]) -> list[SpoolFile]:
    """Journals of processes that are gone, adopted (locked) by this one; oldest first."""
    if not Path(directory).is_dir():
        return []
    return adopt(Path(directory), PREFIX, held)
