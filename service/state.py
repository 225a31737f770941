"""The data plane of one worker process: settings, loaded models, the store and its write queue.

`create_app` builds one `ServiceState`; every protocol's handler calls `infer` with decoded images and gets
batch arrays back, so recording, metrics and model choice happen once for all of them. Nothing here knows
about HTTP: the blueprints in service/api/ (and a gRPC front end later) translate.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from service import metrics, tracing
from service.admission import Admission
from service.codecs.body import Limits
from service.errors import DeadlineExceeded, NotFound
from service.inference import ModelRegistry, ServedModel
from service.lifecycle.shadow import Primary, ShadowRecorder, is_shadow, shadow_id
from service.settings import Settings
from service.store.base import PredictionRecord, Store
from service.store.queue import WriteQueue
from service.tensors import to_pixels
from service.types.batch import Inference, RequestInfo, Upload

log = logging.getLogger(__name__)

# A record written by another worker's write-behind queue reaches the store within milliseconds; a read or
# feedback for a brand-new id waits up to this long for it before answering 404.
PENDING_WRITE_GRACE_S = 1.0


@dataclass
class ServiceState:
    settings: Settings
    models: ModelRegistry
    store: Store
    writes: WriteQueue
    started: float = field(default_factory=time.time)
    stopped: bool = False
    limits: Limits = field(init=False)
    shadows: ShadowRecorder = field(init=False)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits.from_settings(self.settings)
        self.shadows = ShadowRecorder(self.writes)
        self.admission = Admission(self.settings.max_inflight)

    def infer(
        self,
        images: np.ndarray,
        model: str | None,
        version: str | None,
        api: str,
        request: RequestInfo,
        uploads: list[Upload | None] | None = None,
    ) -> Inference:
        """Run float32 [n, 28, 28] images through a model and queue one record per image; a request whose
        deadline (`request.deadline`) passes first is dropped unrun and unrecorded (`DeadlineExceeded`)."""
        served = self.models.get(model, version)
        try:
            probabilities = served.predict(images, request.deadline)
        except Exception as exc:
            if isinstance(exc, DeadlineExceeded):
                metrics.observe_expired(served.name, api, exc.stage)
            seconds = time.perf_counter() - request.started
            metrics.observe_inference(served.name, served.version, api, False, seconds)
            raise
        latency_ms = (time.perf_counter() - request.started) * 1000
        metrics.observe_inference(served.name, served.version, api, True, latency_ms / 1000)
        # Per-batch numpy rather than per-image Python: a request may carry hundreds of images.
        digits = probabilities.argmax(axis=1)
        confidences = probabilities.max(axis=1)
        result = Inference(
            served.name,
            served.version,
            images,
            probabilities,
            digits,
            confidences,
            _uuid4s(len(images)),
            latency_ms,
        )
        if tracing.ENABLED:  # before the records are queued: the writer thread may take them at once
            tracing.remember(result.ids, tracing.current_context())
        self._record(result, served, uploads, request, api)
        metrics.observe_predictions(served.name, served.version, digits.tolist(), confidences.tolist())
        shadow = self.models.shadow(served.name, served)
        if shadow is not None:  # after the answer is ready: the copy never delays it nor changes it
            primary = Primary(
                result.ids, result.digits.tolist(), served.version, api, request.client, request.request_id
            )
            self.shadows.send(shadow, images, primary)
        return result

    def _record(
        self,
        result: Inference,
        served: ServedModel,
        uploads: list[Upload | None] | None,
        request: RequestInfo,
        api: str,
    ) -> None:
        created = datetime.now(UTC)
        pixels = to_pixels(result.images)
        digits = result.digits.tolist()
        confidences = result.confidences.tolist()
        probabilities = result.probabilities.tolist()
        extra = {"api": api}
        keep_bytes = self.settings.keep_image_bytes
        records: list[PredictionRecord] = []
        for i, rid in enumerate(result.ids):
            upload = uploads[i] if uploads else None
            keep = upload is not None and len(upload.data) <= keep_bytes
            records.append(
                PredictionRecord(
                    id=rid,
                    created=created,
                    model=served.name,
                    version=served.version,
                    digit=digits[i],
                    confidence=confidences[i],
                    probabilities=tuple(probabilities[i]),
                    pixels=pixels[i],
                    latency_ms=result.latency_ms,
                    image=upload.data if keep and upload else None,
                    image_type=upload.mime if keep and upload else None,
                    client=request.client,
                    request_id=request.request_id,
                    extra=dict(extra),
                )
            )
        # One call per answer: as durable as MNIST_DURABILITY asks (one group commit) when it returns.
        self.writes.put_many(records)

    def find(self, rid: uuid.UUID) -> PredictionRecord:
        """The record, also when it is still on its way to the store (in this worker's queue or another's)."""
        rec = self.writes.find(rid, PENDING_WRITE_GRACE_S)
        if rec is None:
            raise NotFound(f"no prediction with id {rid}")
        return rec

    def label(self, rid: uuid.UUID, label: int) -> PredictionRecord:
        """Store the true digit of a record; returns the record as it was predicted."""
        rec = self.find(rid)
        # A record still in this worker's write queue is not in the store yet: wait until it is, then label.
        if not self.store.set_label(rid, label) and not (
            self.writes.await_written(rid, PENDING_WRITE_GRACE_S) and self.store.set_label(rid, label)
        ):
            raise NotFound(f"prediction {rid} is not in the store yet; try again in a moment")
        if is_shadow(rec):  # not an answer anyone was given: no field-accuracy signal
            return rec
        metrics.observe_feedback(rec.model, rec.version, rec.digit, label)
        self._count_shadow_feedback(rec, label)
        return rec

    def _count_shadow_feedback(self, rec: PredictionRecord, label: int) -> None:
        """Judge the shadow's answer to the same image by the same label, when the configured shadow version
        answered it: the candidate's field accuracy, on the primary's traffic, before it serves any."""
        version = self.models.shadows.get(rec.model)
        if version is None or version == rec.version:
            return
        # The shadow's record follows the primary's by milliseconds (maybe from a sibling worker's queue):
        # worth the same short wait while that version serves as shadow, none when it cannot have answered.
        grace = PENDING_WRITE_GRACE_S if version in self.models.versions(rec.model) else 0
        shadow = self.writes.find(shadow_id(rec.id, version), grace)
        if shadow is not None:
            metrics.observe_shadow_feedback(rec.model, version, shadow.digit, label)

    def shutdown(self, timeout: float) -> int:
        """Answer queued inference, write every queued record, close the store; returns records drained."""
        if self.stopped:
            return 0
        self.stopped = True
        deadline = time.monotonic() + timeout  # closing the models counts: the arbiter's clock runs
        self.models.close()
        drained = self.writes.drain(max(0.1, deadline - time.monotonic()))
        self.store.close()
        return drained


def _uuid4s(n: int) -> list[uuid.UUID]:
    """n random (version 4) UUIDs from one call for randomness instead of n."""
    raw = os.urandom(16 * n)
    return [uuid.UUID(bytes=raw[i * 16 : (i + 1) * 16], version=4) for i in range(n)]
