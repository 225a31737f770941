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

import gc
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics, tracing
from service.artifacts import Artifact
from service.errors import DeadlineExceeded, ModelsUnavailable, RepositoryConflict, UnknownModel
from service.lifecycle.checks import REJECTED, Fingerprint, Refused, check_answers, scan, verify
from service.lifecycle.overrides import Override, Overrides
from service.lifecycle.policy import VersionPolicy, parse_policies
from service.lifecycle.routing import Router, parse_routes, parse_shadows, usable
from service.lifecycle.watcher import Watcher
from service.runtime import TFLiteModel
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Job:
    images: np.ndarray  # float32 [n, 28, 28]
    future: Future[np.ndarray]
    queued: float = field(default_factory=time.monotonic)
    trace: Any = field(default_factory=tracing.current_context)  # the request's span context (None: off)
    deadline: float | None = None  # time.perf_counter() after which the caller no longer waits for it


_STOP = object()
_NOT_RUN = "the request's deadline passed while it waited for the model; it was not run"
# Put on a batcher's queue when the last request on its way has arrived: the batcher stops waiting for more.
_WAKE = object()


class Arrivals:
    """How many requests of this process are reading and decoding input, i.e. will submit images soon.

    A batcher waiting for them registers a wake-up (`waiting`); the request whose decoding brings the count
    to zero calls it, so the batch runs at once instead of the batcher polling the count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.coming = 0
        self.waiting: set[Callable[[], None]] = set()

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
                wake = list(self.waiting) if not self.coming else ()
            for callback in wake:
                callback()


class MicroBatcher:
    """One model behind a queue: concurrent `submit` calls are answered by shared model calls."""

    def __init__(
        self,
        name: str,
        model: TFLiteModel,
        max_batch_size: int,
        max_wait_s: float,
        arrivals: Arrivals | None = None,
        on_release: Callable[[], None] | None = None,
        version: str = "",
    ) -> None:
        self.name = name
        self.version = version  # the metrics' `version` label
        self.arrivals = arrivals or Arrivals()
        self.model: TFLiteModel | None = model
        # Set once the thread has ended and dropped its interpreter (a retired version's memory goes back).
        self.released = threading.Event()
        self._on_release = on_release
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

    def submit(self, images: np.ndarray, deadline: float | None = None) -> Future[np.ndarray]:
        """Queue float32 [n, 28, 28] images; the future resolves to their [n, 10] probabilities, or to
        `DeadlineExceeded` when the job is still queued at `deadline` (perf_counter time): it never runs."""
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
        self._queue.put(_Job(images, future, deadline=deadline))
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Answer what is queued, then end the thread and release the interpreter (`timeout=0`: no wait)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            if timeout > 0 and self._thread is not threading.current_thread():
                self._thread.join(timeout)

    # --- the batching thread ---

    def _run(self) -> None:
        try:
            while True:
                jobs, stopping = self._collect()
                if jobs:
                    self._run_batch(jobs)
                if stopping:
                    return
        finally:
            with self._model_lock:  # a fast-path call in a request thread finishes first
                self.model = None
            self.released.set()
            if self._on_release is not None:
                self._on_release()

    def _next(self, timeout: float | None) -> Any:
        """The next job (the carried one first); None when nothing arrives within `timeout` (0 = no wait)
        or when the last request on its way arrived without bringing images for this model (`_WAKE`)."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            job = self._queue.get_nowait() if timeout == 0 else self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if job is _WAKE else job

    def _wake(self) -> None:
        self._queue.put(_WAKE)

    def _await_arrivals(self, deadline: float) -> Any:
        """The next job while requests are still decoding, until `deadline`: blocks on the queue (no polling);
        the last arrival's `_WAKE` ends the wait early."""
        arrivals = self.arrivals
        arrivals.waiting.add(self._wake)
        try:
            while arrivals.coming and (left := deadline - time.monotonic()) > 0:
                job = self._next(timeout=left)
                if job is not None:
                    return job
            return None
        finally:
            arrivals.waiting.discard(self._wake)

    def _collect(self) -> tuple[list[_Job], bool]:
        """One batch: whatever is queued, plus a short wait for requests still decoding their input."""
        first = None
        # A stale `_WAKE` is no job, and a job whose caller has given up is left out.
        while first is None or (first is not _STOP and _given_up(first)):
            first = self._next(timeout=None)
        if first is _STOP:
            return [], True
        jobs: list[_Job] = [first]
        size = len(first.images)
        deadline = first.queued + self.max_wait_s
        while size < self.max_batch_size:
            job = self._next(timeout=0)
            if job is None and self.arrivals.coming:
                job = self._await_arrivals(deadline)
            if job is None:
                break
            if job is _STOP:
                return jobs, True
            if _given_up(job):
                continue
            if size + len(job.images) > self.max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            size += len(job.images)
        return jobs, False

    def _run_batch(self, jobs: list[_Job]) -> None:
        with self._model_lock:  # the last moment before the work: a job whose caller gave up is dropped
            jobs = [job for job in jobs if _claim(job)]
            if jobs:
                batch = jobs[0].images if len(jobs) == 1 else np.concatenate([job.images for job in jobs])
                self._call(jobs, batch)

    def _call(self, jobs: list[_Job], batch: np.ndarray) -> None:
        """One model call for `batch` (the jobs' images, concatenated); the caller holds the model lock."""
        started = time.perf_counter()
        try:
            if self.model is None:
                raise ModelsUnavailable(f"model {self.name!r} is unloaded")
            probabilities = self.model.predict(batch)
        except Exception as exc:  # handed to every waiting request, which logs it with its request id
            for job in jobs:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        metrics.observe_batch(self.name, self.version, len(batch), seconds)
        began = time.monotonic() - seconds
        waited = [began - job.queued for job in jobs]
        metrics.observe_jobs(self.name, self.version, sum(waited), len(jobs), seconds)
        if tracing.ENABLED:
            tracing.record_batch([job.trace for job in jobs], waited, seconds, len(batch))
        offset = 0
        for job in jobs:
            n = len(job.images)
            job.future.set_result(probabilities[offset : offset + n])
            offset += n


def _given_up(job: _Job) -> bool:
    """Whether the job's caller no longer waits for it (the batcher then leaves it out of the batch): its
    request thread cancelled it at the deadline, or the deadline has passed (answered DeadlineExceeded)."""
    if job.future.cancelled():
        return True
    if job.deadline is None or time.perf_counter() < job.deadline:
        return False
    return not _claim(job)


def _claim(job: _Job) -> bool:
    """Mark the job running, unless its caller has given up: then it never runs (False)."""
    if not job.future.set_running_or_notify_cancel():
        return False  # cancelled by its request thread, which answered DeadlineExceeded itself
    if job.deadline is not None and time.perf_counter() >= job.deadline:
        job.future.set_exception(DeadlineExceeded(_NOT_RUN, "queued"))
        return False
    return True


@dataclass
class ServedModel:
    """A model version being served: its artifact and the batcher in front of its interpreter.

    Requests hold a reference while they run; once the registry has dropped a retired version, the last
    request to let go of it stops its batcher (`weakref.finalize`), which releases the interpreter.
    """

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

    def predict(self, images: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """float32 [n, 28, 28] -> [n, 10] probabilities, sharing model calls with concurrent requests.

        With a `deadline` (perf_counter time): `DeadlineExceeded` when it has passed before the images are
        queued, or while they wait (queued chunks are then dropped by the batcher, never run)."""
        if deadline is not None and time.perf_counter() >= deadline:
            raise DeadlineExceeded("the request's deadline passed before it reached the model", "arrival")
        chunks = self.submit(images, deadline)
        results = []
        for chunk in chunks:
            left = self.timeout_s if deadline is None else min(self.timeout_s, deadline - time.perf_counter())
            try:
                results.append(chunk.result(timeout=max(left, 0.0)))
            except FutureTimeout:
                if deadline is None or time.perf_counter() < deadline:
                    raise
                # A queued chunk cancelled here never runs; one the model has started cannot be stopped.
                queued = [c.cancel() for c in chunks if not c.done()]
                if queued and all(queued):
                    raise DeadlineExceeded(_NOT_RUN, "queued") from None
                raise DeadlineExceeded(
                    "the request's deadline passed while the model worked on it; the answer is dropped",
                    "waiting",
                ) from None
        return results[0] if len(results) == 1 else np.concatenate(results)

    def submit(self, images: np.ndarray, deadline: float | None = None) -> list[Future[np.ndarray]]:
        """Queue the images in batch-size chunks without waiting (shadow copies use this)."""
        size = self.batcher.max_batch_size
        return [self.batcher.submit(images[i : i + size], deadline) for i in range(0, len(images), size)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "accuracy": self.accuracy}


@dataclass(frozen=True)
class LoadFailure:
    """A version that failed a check: never served until its files change."""

    model: str
    version: str
    reason: str  # one of lifecycle.checks.REASONS
    message: str
    at: str  # ISO time of the attempt

    def describe(self) -> dict[str, str]:
        return {
            "model": self.model,
            "version": self.version,
            "reason": self.reason,
            "message": self.message,
            "at": self.at,
        }


@dataclass
class _Retiring:
    model: str
    version: str
    finalizer: weakref.finalize
    since: float  # time.monotonic() when the registry dropped it
    released: threading.Event


Snapshot = dict[str, dict[str, ServedModel]]  # model -> version -> served; replaced whole, never mutated


class ModelRegistry:
    """The loaded versions of every model under the model directory, chosen by each model's version
    policy and kept current by `refresh()` (the watcher thread calls it every MNIST_MODEL_POLL_S).

    A refresh builds a new snapshot and swaps it in with one assignment, so each model switches atomically
    and a request sees either the old set of versions or the new one. A new version serves only after it
    passed every check in `service.lifecycle.checks` and answered a warm-up batch.
    """

    def __init__(self, settings: Settings, arrivals: Arrivals | None = None) -> None:
        self.settings = settings
        self.default = settings.default_model
        self.arrivals = arrivals or Arrivals()
        self.policies = parse_policies(settings.model_version_policy)
        self.routes = parse_routes(settings.model_routing)
        self.shadows = parse_shadows(settings.model_shadow)
        self.router = Router(settings.routing_seed)
        self._served: Snapshot = {}
        self._failures: dict[tuple[str, str], tuple[Fingerprint, LoadFailure]] = {}
        self._retiring: list[_Retiring] = []
        self.overrides = Overrides(settings.model_overrides_file)
        self._refresh_lock = threading.Lock()
        self._watcher: Watcher | None = None
        self._closed = False

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load and warm up what the policies select; fails loudly (no worker boots) with nothing to serve."""
        registry = cls(settings)
        registry.refresh()
        served = registry._served
        failed = "; ".join(f"{f.model} v{f.version}: {f.message}" for f in registry.failures())
        if not served:
            registry.close()
            raise ModelsUnavailable(
                f"no servable model artifacts under {settings.model_dir.resolve()} "
                f"(want <name>/<n>/model.tflite){'; refused: ' + failed if failed else ''}"
            )
        if settings.default_model not in served:
            registry.close()
            raise ModelsUnavailable(
                f"MNIST_DEFAULT_MODEL={settings.default_model!r} is not among the models: {sorted(served)}"
                f"{'; refused: ' + failed if failed else ''}"
            )
        return registry

    # --- reading (request threads) ---

    @property
    def models(self) -> dict[str, ServedModel]:
        """The highest loaded version of each model."""
        return {name: versions[_highest(versions)] for name, versions in self._served.items()}

    def versions(self, name: str) -> dict[str, ServedModel]:
        """Every loaded version of `name` (empty when none)."""
        return dict(self._served.get(name, {}))

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The version that answers: `version` if given, else by the model's canary weights, else the
        highest loaded one. `UnknownModel` for other names or versions."""
        name = name or self.default
        versions = self._served.get(name)  # one snapshot for the whole lookup
        if not versions:
            raise UnknownModel(f"no model named {name!r}; served models: {', '.join(sorted(self._served))}")
        if version is not None:
            model = versions.get(version)
            if model is None:
                serving = ", ".join(sorted(versions, key=int))
                raise UnknownModel(f"model {name!r} has no version {version!r}; serving {serving}")
            return model
        weights = usable(self.routes.get(name, ()), versions)
        return versions[self.router.choose(weights) if weights else _highest(versions)]

    def shadow(self, name: str, answering: ServedModel) -> ServedModel | None:
        """The version that gets a shadow copy of a request `answering` answered, if one is set and loaded."""
        version = self.shadows.get(name)
        if version is None or version == answering.version:
            return None
        return self._served.get(name, {}).get(version)

    def failures(self) -> list[LoadFailure]:
        """Versions refused by a check, for /readyz and the v2 model metadata."""
        # list() copies in one step under the GIL: the watcher thread may be changing the dict meanwhile.
        return [failure for _, failure in list(self._failures.values())]

    def status(self, name: str) -> list[dict[str, Any]]:
        """TF Serving's `model_version_status` of `name`: loaded, unloading and refused versions."""
        rows: dict[str, dict[str, Any]] = {}
        for retiring in list(self._retiring):
            if retiring.model == name and not retiring.released.is_set():
                rows[retiring.version] = _status_row(retiring.version, "UNLOADING")
        for version in self._served.get(name, {}):
            rows[version] = _status_row(version, "AVAILABLE")
        for failure in self.failures():
            if failure.model == name and failure.version not in rows:
                rows[failure.version] = _status_row(
                    failure.version, "END", "FAILED_PRECONDITION", f"{failure.reason}: {failure.message}"
                )
        return [rows[v] for v in sorted(rows, key=int, reverse=True)]

    @property
    def ready(self) -> bool:
        return bool(self._served) and all(
            model.batcher.alive for versions in self._served.values() for model in versions.values()
        )

    # --- the model repository (v2 repository extension: index, load, unload) ---

    def index(self) -> list[dict[str, str]]:
        """Every version on disk with its state: READY (serving), or UNAVAILABLE with the reason."""
        on_disk, served, overrides = scan(self.settings.model_dir), self._served, self.overrides.read()
        failures = {(f.model, f.version): f for f in self.failures()}
        rows = []
        for name, numbers in on_disk.items():
            override = overrides.get(name)
            for version in (str(n) for n in numbers):
                row = {"name": name, "version": version, "state": "READY", "reason": ""}
                if version not in served.get(name, {}):
                    failure = failures.get((name, version))
                    row["state"] = "UNAVAILABLE"
                    if failure is not None:
                        row["reason"] = f"{failure.reason}: {failure.message}"
                    elif override is not None and override.unloaded:
                        row["reason"] = "unloaded"
                    else:
                        row["reason"] = "not selected by the version policy"
                rows.append(row)
        return rows

    def load_model(self, name: str, versions: list[str] | None = None) -> list[dict[str, Any]]:
        """Serve `name` again (after an unload), pinned to `versions` if given, else by its policy; every
        worker follows at its next poll, this one at once. Returns the model's version status."""
        on_disk = scan(self.settings.model_dir).get(name)
        if not on_disk:
            raise UnknownModel(f"no model named {name!r} in the model directory")
        absent = [v for v in versions or [] if not v.isdigit() or int(v) not in on_disk]
        if absent:
            raise UnknownModel(f"model {name!r} has no version {', '.join(absent)} on disk")
        # A version this worker already refused is refused before the shared pin is written: the other workers
        # read that file on their own polls and would briefly follow a pin that is about to be undone.
        if known_bad := [f for f in self.failures() if f.model == name and f.version in (versions or [])]:
            raise _not_loadable(name, known_bad)
        previous = self.overrides.read().get(name)
        self._set_override(name, Override(versions=tuple(versions)) if versions else None)
        self.refresh()
        served = set(self._served.get(name, {}))
        if not served or (versions and not set(versions) <= served):
            self._set_override(name, previous)  # a pin that cannot serve is not left for the other workers
            self.refresh()
            raise _not_loadable(name, [f for f in self.failures() if f.model == name])
        return self.status(name)

    def unload_model(self, name: str) -> None:
        """Take `name` out of service in every worker (until `load_model`); not the default model."""
        if name == self.default:
            raise RepositoryConflict(f"{name!r} is the default model (MNIST_DEFAULT_MODEL) and stays loaded")
        if name not in self._served and name not in scan(self.settings.model_dir):
            raise UnknownModel(f"no model named {name!r}")
        self._set_override(name, Override(unloaded=True))
        self.refresh()

    def _set_override(self, name: str, override: Override | None) -> None:
        try:
            self.overrides.set(name, override)
        except OSError as exc:
            raise RepositoryConflict(
                f"cannot write MNIST_MODEL_OVERRIDES_FILE={self.overrides.path}: {exc}"
            ) from None

    # --- changing (watcher thread, startup) ---

    def watch(self, interval_s: float | None = None) -> None:
        """Start the watcher thread (call after the fork); 0 seconds = never look again."""
        interval_s = self.settings.model_poll_s if interval_s is None else interval_s
        if interval_s > 0 and self._watcher is None and not self._closed:
            self._watcher = Watcher(self._poll, interval_s).start()

    def _poll(self) -> None:
        """One look at the model directory; also refreshes this worker's memory gauge, which otherwise moves
        only with this worker's requests and goes stale in a worker the clients' connections do not reach."""
        self.refresh()
        metrics.update_process_metrics()

    def refresh(self) -> bool:
        """Load what the policies now select, swap it in, retire the rest; True when something changed."""
        with self._refresh_lock:
            if self._closed:
                return False
            current = self._served
            on_disk = scan(self.settings.model_dir)
            for name, version in list(self._failures):  # a removed folder is no longer a failure to show
                if int(version) not in on_disk.get(name, []):
                    del self._failures[(name, version)]
            overrides = self.overrides.read()
            new: Snapshot = {}
            for name in sorted(set(on_disk) | set(current)):
                override = overrides.get(name)
                if override is not None and override.unloaded:
                    continue  # taken out of service by the model repository's unload
                policy = self.policies[name]
                if override is not None and override.versions:
                    policy = VersionPolicy("specific", versions=frozenset(int(v) for v in override.versions))
                chosen = self._select(name, policy, on_disk.get(name, []), current.get(name, {}))
                if not chosen and current.get(name):
                    # Never go from serving to nothing (a volume hiccup, a deleted folder): keep what runs.
                    log.warning("model %s: no valid version on disk, keeping the loaded ones", name)
                    chosen = current[name]
                if chosen:
                    new[name] = chosen
            changed = _differs(current, new)
            if changed:
                self._served = new  # the atomic switch
                self._announce(current, new)
                for name, versions in current.items():
                    for version, model in versions.items():
                        if new.get(name, {}).get(version) is not model:
                            self._retire(model)
            self._reap()
            return changed

    def _select(
        self, name: str, policy: VersionPolicy, on_disk: list[int], loaded: dict[str, ServedModel]
    ) -> dict[str, ServedModel]:
        """The versions of `name` the policy wants, loading (and checking) the ones not loaded yet."""
        chosen: dict[str, ServedModel] = {}
        for number in policy.order(on_disk):
            if policy.enough(len(chosen)):
                break
            version = str(number)
            path = self.settings.model_dir / name / version
            model = loaded.get(version)
            if model is not None and (path / REJECTED).exists():
                log.warning("model %s version %s was marked rejected: unloading it", name, version)
                self._fail(
                    name, version, Fingerprint.of(path), Refused("rejected", f"{path} marked rejected")
                )
                model = None
            elif model is None:
                model = self._load(name, number, path)
            if model is not None:
                chosen[version] = model
        return chosen

    def _load(self, name: str, number: int, path: Path) -> ServedModel | None:
        """Check, load and warm up one version; None (logged and counted) when any step fails."""
        version = str(number)
        fingerprint = Fingerprint.of(path)
        known = self._failures.get((name, version))
        if known is not None and known[0] == fingerprint:
            return None  # same files as when it failed: same verdict, not logged again
        started = time.perf_counter()
        try:
            artifact = verify(path, name, number)
            try:
                model = TFLiteModel.load(artifact.tflite_path, threads=self.settings.inference_threads)
            except (ValueError, RuntimeError) as exc:
                raise Refused("load", f"LiteRT could not open {artifact.tflite_path}: {exc}") from None
            _warm_up(model, self.settings.max_batch_size)
        except Refused as exc:
            self._fail(name, version, fingerprint, exc)
            return None
        self._failures.pop((name, version), None)
        batcher = MicroBatcher(
            name,
            model,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms / 1000,
            self.arrivals,
            on_release=lambda: _released(name, version),
            version=version,
        ).start()
        metrics.set_model_loaded(name, version, True)
        log.info(
            "model %s version %s loaded (test accuracy %.4f) in %.3fs",
            name,
            version,
            artifact.accuracy,
            time.perf_counter() - started,
            extra={"model": name, "version": version, "path": str(path)},
        )
        return ServedModel(artifact, batcher, timeout_s=float(self.settings.timeout_s))

    def _fail(self, name: str, version: str, fingerprint: Fingerprint, refused: Refused) -> None:
        failure = LoadFailure(
            name, version, refused.reason, refused.message, datetime.now(UTC).isoformat(timespec="seconds")
        )
        self._failures[(name, version)] = (fingerprint, failure)
        metrics.model_load_failed(name, version, refused.reason)
        log.warning(
            "model %s version %s refused (%s): %s",
            name,
            version,
            refused.reason,
            refused.message,
            extra={"model": name, "version": version, "reason": refused.reason},
        )

    def _announce(self, old: Snapshot, new: Snapshot) -> None:
        """Model info gauges and a log line for each model whose primary (highest) version changed."""
        for name in set(old) | set(new):
            before = old[name][_highest(old[name])] if old.get(name) else None
            after = new[name][_highest(new[name])] if new.get(name) else None
            if before is after:
                continue
            if before is not None:
                metrics.set_model_info(name, before.version, before.accuracy, serving=False)
            if after is not None:
                metrics.set_model_info(name, after.version, after.accuracy)
            log.info(
                "model %s now serves versions %s",
                name,
                ", ".join(sorted(new.get(name, {}), key=int)),
                extra={"model": name, "versions": sorted(new.get(name, {}), key=int)},
            )

    def _retire(self, model: ServedModel) -> None:
        """Drop a version: its batcher stops when the last request holding it lets go (or after the request
        timeout at the latest, see `_reap`), which releases the interpreter."""
        finalizer = weakref.finalize(model, model.batcher.stop, 0)
        self._retiring.append(
            _Retiring(model.name, model.version, finalizer, time.monotonic(), model.batcher.released)
        )
        log.info(
            "model %s version %s retired (resident memory %d MB)",
            model.name,
            model.version,
            metrics.resident_bytes() // 2**20,
            extra={"model": model.name, "version": model.version},
        )

    def _reap(self) -> None:
        """Forget released versions; stop ones still held after the request timeout (their holder has
        given up by then)."""
        now = time.monotonic()
        for retiring in list(self._retiring):
            if retiring.finalizer.alive and now - retiring.since > self.settings.timeout_s:
                retiring.finalizer()
            if retiring.released.is_set():
                self._retiring.remove(retiring)

    def close(self) -> None:
        """Stop the watcher, then answer what is queued and stop every batcher (at shutdown)."""
        if self._watcher is not None:
            self._watcher.stop()
        with self._refresh_lock:
            self._closed = True
            for versions in self._served.values():
                for model in versions.values():
                    model.batcher.stop()
            for retiring in self._retiring:
                retiring.finalizer()


def _highest(versions: dict[str, ServedModel]) -> str:
    return max(versions, key=int)


def _differs(old: Snapshot, new: Snapshot) -> bool:
    if old.keys() != new.keys():
        return True
    return any(old[n].keys() != new[n].keys() or any(old[n][v] is not new[n][v] for v in new[n]) for n in new)


def _status_row(version: str, state: str, code: str = "OK", message: str = "") -> dict[str, Any]:
    return {"version": version, "state": state, "status": {"error_code": code, "error_message": message}}


def _released(name: str, version: str) -> None:
    """In the ended batcher thread: the interpreter is dropped; collect it and report the memory."""
    gc.collect()
    metrics.set_model_loaded(name, version, False)
    metrics.update_process_metrics(force=True)
    log.info(
        "model %s version %s unloaded (resident memory %d MB)",
        name,
        version,
        metrics.resident_bytes() // 2**20,
        extra={"model": name, "version": version, "resident_bytes": metrics.resident_bytes()},
    )


def _not_loadable(name: str, refused: list[LoadFailure]) -> RepositoryConflict:
    """The model repository's answer to a load it cannot carry out, naming each refused version's reason."""
    reasons = "; ".join(f"v{f.version}: {f.message}" for f in refused) or "no version"
    return RepositoryConflict(f"model {name!r} could not be loaded as asked: {reasons}")


def _warm_up(model: TFLiteModel, max_batch_size: int) -> None:
    """Run the first (slow) calls now rather than in the first requests (allocation, kernel setup), and
    refuse a model whose answer is not a probability distribution."""
    for n in (max_batch_size, 1):
        try:
            probabilities = model.predict(np.zeros((n, 28, 28), dtype=np.float32))
        except (ValueError, RuntimeError) as exc:
            raise Refused("warmup", f"warm-up batch of {n} failed: {exc}") from None
        check_answers(probabilities, n)
