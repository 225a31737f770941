"""Shadow traffic: a copy of each answered request goes to a candidate version, whose answers are recorded
(flagged as shadow) but never returned, so a new model is judged on real traffic before it takes any.

A shadow record is an ordinary `PredictionRecord` whose `extra` says `"shadow": true` with the id and
version of the primary prediction it shadows; `extra` is a JSON column in SQLite and Cassandra alike, so no
schema changes. Its id is derived from the primary's (`shadow_id`), so feedback given for the primary can
find the shadow's answer, and a replayed record is the same row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from service import metrics
from service.inference import ServedModel
from service.store.base import PredictionRecord
from service.tensors import to_pixels

log = logging.getLogger(__name__)


class RecordSink(Protocol):
    """Where records go (the write queue)."""

    def put(self, rec: PredictionRecord) -> None: ...


@dataclass(frozen=True)
class Primary:
    """What the primary version answered for a request: the shadow's answers are compared with it."""

    ids: Sequence[uuid.UUID]
    digits: Sequence[int]
    version: str
    api: str
    client: str | None = None
    request_id: str | None = None


def shadow_id(primary_id: uuid.UUID, version: str) -> uuid.UUID:
    """The id of the shadow record of `primary_id` answered by `version` (stable across replays)."""
    return uuid.uuid5(primary_id, f"shadow-{version}")


def is_shadow(rec: PredictionRecord) -> bool:
    return bool(rec.extra.get("shadow"))


class ShadowRecorder:
    """Submits shadow copies without waiting; the answers are recorded from the shadow's batcher thread."""

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink

    def send(self, shadow: ServedModel, images: np.ndarray, primary: Primary) -> list[Future[np.ndarray]]:
        """Queue float32 [n, 28, 28] images on `shadow`; returns the futures (tests wait on them)."""
        started = time.perf_counter()
        futures = shadow.submit(images)
        size = shadow.batcher.max_batch_size
        name, version = shadow.name, shadow.version
        for chunk, future in enumerate(futures):
            lo = chunk * size

            def done(f: Future[np.ndarray], lo: int = lo) -> None:
                self._record(f, name, version, images[lo : lo + size], primary, lo, started)

            future.add_done_callback(done)
        return futures

    def _record(
        self,
        future: Future[np.ndarray],
        model: str,
        version: str,
        images: np.ndarray,
        primary: Primary,
        offset: int,
        started: float,
    ) -> None:
        if future.exception() is not None:  # a shadow failure never affects the primary answer
            log.warning("shadow %s v%s failed: %s", model, version, future.exception())
            return
        probabilities = future.result()
        latency_ms = (time.perf_counter() - started) * 1000
        digits = probabilities.argmax(axis=1).tolist()
        created = datetime.now(UTC)
        agreed = 0
        for i, (probs, pixels) in enumerate(zip(probabilities, to_pixels(images), strict=True)):
            primary_id, primary_digit = primary.ids[offset + i], primary.digits[offset + i]
            agreed += digits[i] == primary_digit
            self.sink.put(
                PredictionRecord(
                    id=shadow_id(primary_id, version),
                    created=created,
                    model=model,
                    version=version,
                    digit=digits[i],
                    confidence=float(probs.max()),
                    probabilities=tuple(probs.tolist()),
                    pixels=pixels,
                    latency_ms=latency_ms,
                    client=primary.client,
                    request_id=primary.request_id,
                    extra={
                        "api": primary.api,
                        "shadow": True,
                        "primary_id": str(primary_id),
                        "primary_version": primary.version,
                        "primary_digit": primary_digit,
                    },
                )
            )
        metrics.observe_shadow(model, primary.version, version, agreed, len(digits) - agreed)
