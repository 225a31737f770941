"""Users' corrections as a training set: every labelled prediction in the store, streamed (the store pages
through millions of rows; here each record costs its 784 pixel bytes and one label byte), split into a
training part and a fixed evaluation slice.

The slice is chosen by a hash of the seed and the record id, not by position: the same record always falls
on the same side, however the store orders its rows and however much feedback arrived since, so the slice
accuracies of two retraining runs with one seed are measured on the same records (plus new ones).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from service.store.base import PredictionRecord

PIXELS = 28 * 28


@dataclass(frozen=True)
class FeedbackSet:
    """uint8 [n, 28, 28] images with their true digits, and the model's digit at prediction time."""

    images: np.ndarray
    labels: np.ndarray  # int64 [n]
    predicted: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FeedbackSplit:
    train: FeedbackSet
    evaluation: FeedbackSet
    skipped: int  # shadow records and records with unusable pixels


def in_slice(record_id: uuid.UUID, seed: int, share: float) -> bool:
    """True for the `share` of ids (by a seeded hash) that belong to the evaluation slice."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class _Builder:
    """Grows one side of the split without a Python object per record."""

    def __init__(self) -> None:
        self.pixels = bytearray()
        self.labels = bytearray()
        self.predicted = bytearray()

    def add(self, rec: PredictionRecord) -> None:
        self.pixels += rec.pixels
        self.labels.append(int(rec.label or 0))
        self.predicted.append(rec.digit)

    def build(self) -> FeedbackSet:
        """Arrays over the collected bytes (no copy of the pixels, the one large part)."""
        n = len(self.labels)
        return FeedbackSet(
            np.frombuffer(self.pixels, dtype=np.uint8).reshape(n, 28, 28),
            np.frombuffer(self.labels, dtype=np.uint8).astype(np.int64),
            np.frombuffer(self.predicted, dtype=np.uint8).astype(np.int64),
        )


def split_feedback(records: Iterable[PredictionRecord], seed: int, share: float) -> FeedbackSplit:
    """Stream labelled records into (train, evaluation slice); shadow copies are not feedback."""
    train, evaluation = _Builder(), _Builder()
    skipped = 0
    with tqdm(desc="feedback", unit=" records", mininterval=2.0) as progress:
        for rec in records:
            progress.update()
            if rec.label is None or rec.extra.get("shadow") or len(rec.pixels) != PIXELS:
                skipped += 1
                continue
            if not 0 <= rec.label <= 9:
                skipped += 1
                continue
            (evaluation if in_slice(rec.id, seed, share) else train).add(rec)
    return FeedbackSplit(train.build(), evaluation.build(), skipped)
