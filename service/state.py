"""What one worker process serves with: settings, loaded models, the store and its write queue.

`create_app` builds one `ServiceState` and keeps it in `app.extensions`; the blueprints reach it through
`current()`, the gunicorn `worker_exit` hook through the app object, to drain it on shutdown.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flask import current_app, g, request

from service import metrics
from service.inference import ModelRegistry, ServedModel
from service.settings import Settings
from service.store.base import PredictionRecord, Store
from service.store.queue import WriteQueue
from service.tensors import to_pixels

log = logging.getLogger(__name__)

EXTENSION = "mnist"


@dataclass(frozen=True)
class Prediction:
    """One image's answer, and the id of the record kept for it."""

    id: uuid.UUID
    model: ServedModel
    digit: int
    confidence: float
    probabilities: np.ndarray  # float32 [10]
    image: np.ndarray  # float32 [28, 28], what the model saw

    def as_json(self, latency_ms: float, include_input: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "model": self.model.name,
            "version": self.model.version,
            "digit": self.digit,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities.tolist()],
            "latency_ms": round(latency_ms, 3),
        }
        if include_input:
            body["input"] = np.round(self.image, 4).tolist()
        return body


@dataclass(frozen=True)
class RequestInfo:
    """Who asked: kept with each record."""

    client: str | None
    request_id: str | None
    started: float  # time.perf_counter() at request start
    api: str


@dataclass(frozen=True)
class Upload:
    """The original bytes of an image, kept with its record when small enough."""

    data: bytes
    mime: str | None


@dataclass
class ServiceState:
    settings: Settings
    models: ModelRegistry
    store: Store
    writes: WriteQueue
    started: float = field(default_factory=time.time)
    stopped: bool = False

    def predict(
        self,
        images: np.ndarray,
        info: RequestInfo,
        model: str | None = None,
        version: str | None = None,
        uploads: list[Upload | None] | None = None,
    ) -> tuple[list[Prediction], float]:
        """Run float32 [n, 28, 28] images through a model, record each result; also returns latency in ms."""
        served = self.models.get(model, version)
        probabilities = served.predict(images)
        latency_ms = (time.perf_counter() - info.started) * 1000
        # Per-batch numpy rather than per-image Python: a request may carry hundreds of images.
        digits = probabilities.argmax(axis=1).tolist()
        confidences = probabilities.max(axis=1).tolist()
        pixels = to_pixels(images)
        ids = _uuid4s(len(images))
        created = datetime.now(UTC)
        predictions: list[Prediction] = []
        for i, probs in enumerate(probabilities):
            prediction = Prediction(ids[i], served, digits[i], confidences[i], probs, images[i])
            self._record(prediction, pixels[i], uploads[i] if uploads else None, info, created, latency_ms)
            predictions.append(prediction)
        metrics.observe_predictions(served.name, digits, confidences)
        return predictions, latency_ms

    def _record(
        self,
        p: Prediction,
        pixels: bytes,
        upload: Upload | None,
        info: RequestInfo,
        created: datetime,
        latency_ms: float,
    ) -> None:
        keep = upload is not None and len(upload.data) <= self.settings.keep_image_bytes
        self.writes.put(
            PredictionRecord(
                id=p.id,
                created=created,
                model=p.model.name,
                version=p.model.version,
                digit=p.digit,
                confidence=p.confidence,
                probabilities=tuple(p.probabilities.tolist()),
                pixels=pixels,
                latency_ms=latency_ms,
                image=upload.data if keep and upload else None,
                image_type=upload.mime if keep and upload else None,
                client=info.client,
                request_id=info.request_id,
                extra={"api": info.api},
            )
        )

    def shutdown(self, timeout: float) -> int:
        """Answer queued inference, write every queued record, close the store; returns records drained."""
        if self.stopped:
            return 0
        self.stopped = True
        self.models.close()
        drained = self.writes.drain(timeout)
        self.store.close()
        return drained


def _uuid4s(n: int) -> list[uuid.UUID]:
    """n random (version 4) UUIDs from one call for randomness instead of n."""
    raw = os.urandom(16 * n)
    return [uuid.UUID(bytes=raw[i * 16 : (i + 1) * 16], version=4) for i in range(n)]


def current() -> ServiceState:
    """The state of the app handling this request."""
    state: ServiceState = current_app.extensions[EXTENSION]
    return state


def request_info(api: str) -> RequestInfo:
    """Who is asking, for the records of this request (`api`: which protocol it came through)."""
    route = request.access_route
    return RequestInfo(
        client=route[0] if route else request.remote_addr,
        request_id=g.get("request_id"),
        started=g.get("started", time.perf_counter()),
        api=api,
    )
