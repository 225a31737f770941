"""The Store protocol and the record every backend keeps, so the web layer knows only `Store`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from service.errors import StoreUnavailable


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as stored: what was asked, what the model said, and the later feedback."""

    id: uuid.UUID
    created: datetime  # timezone-aware UTC
    model: str
    version: str
    digit: int
    confidence: float
    probabilities: tuple[float, ...]  # 10 values
    pixels: bytes  # the normalized 28x28 input the model saw, row-major uint8 (784 bytes)
    latency_ms: float
    image: bytes | None = None  # the original upload, when not larger than MNIST_KEEP_IMAGE_BYTES
    image_type: str | None = None  # e.g. "image/png"
    client: str | None = None
    request_id: str | None = None
    label: int | None = None  # the true digit, from feedback
    extra: dict[str, Any] = field(default_factory=dict)


class PartialWrite(StoreUnavailable):
    """Some records of a `record_many` batch were not stored because the store is unavailable.

    The others were: a caller that keeps `failed` for later loses nothing and repeats nothing needlessly.
    """

    def __init__(self, message: str, failed: Sequence[PredictionRecord]) -> None:
        super().__init__(message)
        self.failed = list(failed)


@runtime_checkable
class Store(Protocol):
    """Where predictions are kept. Writes are idempotent: the same id twice is the same row.

    A write the store cannot take because it is unavailable (down, unreachable, locked, unwritable) raises
    `StoreUnavailable` (or `PartialWrite`), so a wrapper such as `SpooledStore` can keep the records for
    later; any other error is a bad record or a bug.
    """

    backend: str  # "sqlite", "cassandra": the `backend` label of the store metrics

    def record(self, rec: PredictionRecord) -> None:
        """Persist one record (an upsert by id)."""

    def record_many(self, recs: Sequence[PredictionRecord]) -> None:
        """Persist several records at once (what the write queue and the spool replay use)."""

    def get(self, record_id: uuid.UUID) -> PredictionRecord | None:
        """One record by id, or None."""

    def list(
        self,
        limit: int = 50,
        before: datetime | None = None,
        digit: int | None = None,
        model: str | None = None,
        before_id: uuid.UUID | None = None,
        shadows: bool = False,
    ) -> list[PredictionRecord]:
        """Newest first by (created, id); strictly older than `before`, or than the pair (`before`,
        `before_id`) when both are given, so records sharing a timestamp page without gaps or repeats.
        Shadow records (`extra.shadow`, service/lifecycle/shadow.py) only with `shadows`: no user saw them."""

    def set_label(self, record_id: uuid.UUID, label: int) -> bool:
        """Store the true digit for a record; False when the id is unknown."""

    def labelled(self) -> Iterator[PredictionRecord]:
        """Every record that has a feedback label, for export and retraining."""

    def health(self) -> dict[str, Any]:
        """{"ok": bool, "status": "ok"|"degraded"|"down", ...details}; cheap enough for /readyz."""

    def close(self) -> None:
        """Flush and release connections; called once at shutdown."""
