"""Loaded models and the micro-batcher: the only place that runs a model at serve time.

Each served model gets one `MicroBatcher`: a thread that runs the model's interpreter (interpreters are not
thread-safe) and a queue that request threads put their images on. The thread takes what is queued, up to
`max_batch_size` images, and runs them as one batch. It waits for more (at most `max_batch_wait_ms` after the
first request of the batch arrived) only while other requests of this process are still decoding their
images (`Arrivals`): an idle server answers a lone request at once, and a batch never waits for requests
that do not exist. A request that finds the model idle and nobody else on the way runs the model in its own
thread, which saves two thread switches.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service import metrics, tracing
from service.artifacts import Artifact, discover
from service.errors import ModelsUnavailable, UnknownModel
from service.runtime import TFLiteModel
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Job:
    images: np.ndarray  # float32 [n, 28, 28]
    future: Future[np.ndarray]
    queued: float = field(default_factory=time.monotonic)
    trace: Any = field(default_factory=tracing.current_context)  # the request's span context (None: off)


_STOP = object()
# While requests are on their way, look at the queue this often (seconds) until the batch deadline.
_POLL_S = 0.0002


class Arrivals:
    """How many requests of this process are reading and decoding input, i.e. will submit images soon."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.coming = 0

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Wrap the decoding of a request's input (not the model call)."""
        with self._lock:
            self.coming += 1
        try:
            yield
        finally:
            with self._lock:
                self.coming -= 1


class MicroBatcher:
    """One model behind a queue: concurrent `submit` calls are answered by shared model calls."""

    def __init__(
        self,
        name: str,
        model: TFLiteModel,
        max_batch_size: int,
        max_wait_s: float,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.name = name
        self.arrivals = arrivals or Arrivals()
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._carry: _Job | None = None  # a job that did not fit the previous batch
        # The interpreter is not thread-safe: whoever calls it (batch thread or fast path) holds this.
        self._model_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)

    def start(self) -> MicroBatcher:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, images: np.ndarray) -> Future[np.ndarray]:
        """Queue float32 [n, 28, 28] images; the future resolves to their [n, 10] probabilities."""
        future: Future[np.ndarray] = Future()
        if not self._thread.is_alive():
            future.set_exception(ModelsUnavailable(f"model {self.name!r} is shut down"))
            return future
        # Fast path: nothing queued, nobody else decoding, model free -> run it here, no thread switches.
        if (
            self._carry is None
            and not self.arrivals.coming
            and self._queue.empty()
            and self._model_lock.acquire(blocking=False)
        ):
            try:
                self._call([_Job(images, future)], images)
            finally:
                self._model_lock.release()
            return future
        self._queue.put(_Job(images, future))
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Answer what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # --- the batching thread ---

    def _run(self) -> None:
        while True:
            jobs, stopping = self._collect()
            if jobs:
                self._run_batch(jobs)
            if stopping:
                return

    def _next(self, timeout: float | None) -> Any:
        """The next job (the carried one first); None when nothing arrives within `timeout` (0 = no wait)."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            if timeout == 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _collect(self) -> tuple[list[_Job], bool]:
        """One batch: whatever is queued, plus a short wait for requests still decoding their input."""
        first = self._next(timeout=None)
        if first is _STOP:
            return [], True
        jobs: list[_Job] = [first]
        size = len(first.images)
        deadline = first.queued + self.max_wait_s
        while size < self.max_batch_size:
            job = self._next(timeout=0)
            while job is None and self.arrivals.coming and (left := deadline - time.monotonic()) > 0:
                job = self._next(timeout=min(left, _POLL_S))
            if job is None:
                break
            if job is _STOP:
                return jobs, True
            if size + len(job.images) > self.max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            size += len(job.images)
        return jobs, False

    def _run_batch(self, jobs: list[_Job]) -> None:
        batch = jobs[0].images if len(jobs) == 1 else np.concatenate([job.images for job in jobs])
        with self._model_lock:
            self._call(jobs, batch)

    def _call(self, jobs: list[_Job], batch: np.ndarray) -> None:
        """One model call for `batch` (the jobs' images, concatenated); the caller holds the model lock."""
        started = time.perf_counter()
        try:
            probabilities = self.model.predict(batch)
        except Exception as exc:  # handed to every waiting request, which logs it with its request id
            for job in jobs:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        metrics.observe_batch(self.name, len(batch), seconds)
        began = time.monotonic() - seconds
        waited = [began - job.queued for job in jobs]
        metrics.observe_jobs(self.name, sum(waited), len(jobs), seconds)
        if tracing.ENABLED:
            tracing.record_batch([job.trace for job in jobs], waited, seconds, len(batch))
        offset = 0
        for job in jobs:
            n = len(job.images)
            job.future.set_result(probabilities[offset : offset + n])
            offset += n


@dataclass
class ServedModel:
    """A model version being served: its artifact and the batcher in front of its interpreter."""

    artifact: Artifact
    batcher: MicroBatcher
    timeout_s: float

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def accuracy(self) -> float:
        return self.artifact.accuracy

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [n, 28, 28] -> [n, 10] probabilities, sharing model calls with concurrent requests."""
        chunks = [
            self.batcher.submit(images[i : i + self.batcher.max_batch_size])
            for i in range(0, len(images), self.batcher.max_batch_size)
        ]
        results = [chunk.result(timeout=self.timeout_s) for chunk in chunks]
        return results[0] if len(results) == 1 else np.concatenate(results)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "accuracy": self.accuracy}


class ModelRegistry:
    """Every model under the model directory (latest version of each name), loaded once and warmed up."""

    def __init__(self, models: dict[str, ServedModel], default: str, arrivals: Arrivals) -> None:
        self.models = models
        self.default = default
        self.arrivals = arrivals

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load and warm up every model; fails loudly (no worker boots) when there is nothing to serve."""
        found = discover(settings.model_dir)
        if not found:
            raise ModelsUnavailable(
                f"no model artifacts under {settings.model_dir.resolve()} (want <name>/<n>/model.tflite)"
            )
        if settings.default_model not in found:
            raise ModelsUnavailable(
                f"MNIST_DEFAULT_MODEL={settings.default_model!r} is not among the models: {sorted(found)}"
            )
        models: dict[str, ServedModel] = {}
        arrivals = Arrivals()
        for name, versions in found.items():
            artifact = versions[-1]
            model = TFLiteModel.load(artifact.tflite_path, threads=settings.inference_threads)
            _warm_up(model, settings.max_batch_size)
            batcher = MicroBatcher(
                name, model, settings.max_batch_size, settings.max_batch_wait_ms / 1000, arrivals
            ).start()
            models[name] = ServedModel(artifact, batcher, timeout_s=float(settings.timeout_s))
            metrics.set_model_info(name, artifact.version, artifact.accuracy)
            log.info(
                "model %s version %s loaded (test accuracy %.4f)",
                name,
                artifact.version,
                artifact.accuracy,
                extra={"model": name, "version": artifact.version, "path": str(artifact.path)},
            )
        return cls(models, settings.default_model, arrivals)

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model `name` (default model when None); `UnknownModel` for other names or versions."""
        model = self.models.get(name or self.default)
        if model is None:
            raise UnknownModel(f"no model named {name!r}; served models: {', '.join(sorted(self.models))}")
        if version is not None and version != model.version:
            raise UnknownModel(f"model {model.name!r} has no version {version!r}; serving {model.version}")
        return model

    @property
    def ready(self) -> bool:
        return all(model.batcher.alive for model in self.models.values())

    def close(self) -> None:
        for model in self.models.values():
            model.batcher.stop()


def _warm_up(model: TFLiteModel, max_batch_size: int) -> None:
    """Run the first (slow) calls now rather than in the first requests: allocation, kernel setup."""
    for n in (max_batch_size, 1):
        model.predict(np.zeros((n, 28, 28), dtype=np.float32))
