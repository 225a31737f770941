"""Every Prometheus metric of the service, defined once, safe under several gunicorn workers.

Multiprocess mode: gunicorn's `mnist serve` sets PROMETHEUS_MULTIPROC_DIR (an empty directory) before this
module is imported; each worker then writes its values to mmap files there and `/metrics` merges them with
`registry_for_scrape()`. Counters and histograms are summed across workers; gauges say how in
`multiprocess_mode`. The gunicorn `child_exit` hook must call `worker_exited(pid)` so the `live*` gauges of a
dead worker disappear. Without the variable (tests, `flask run`) the ordinary in-process registry is used.
"""

from __future__ import annotations

import collections
import os
import resource
import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE", "registry_for_scrape", "render", "worker_exited"]

# Seconds, 0.5 ms .. 5 s: serving is sub-millisecond per image, queueing and stores are slower.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Confidence is mostly near 1 for a good model, so the interesting resolution is there.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(11))  # 1 .. 1024

# --- HTTP and gRPC ---
# Each protocol its own pair: HTTP status codes and gRPC status codes are different vocabularies, so one
# `status` label for both would break every `status=~"5.."` error ratio.
HTTP_REQUESTS = Counter(
    "mnist_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "mnist_http_request_duration_seconds",
    "Time from HTTP request start to response, by route template.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
GRPC_REQUESTS = Counter(
    "mnist_grpc_requests_total",
    "gRPC calls answered, by RPC (ModelInfer, ServerLive, ...) and status code (OK, INVALID_ARGUMENT, ...).",
    ["rpc", "code"],
)
GRPC_DURATION = Histogram(
    "mnist_grpc_request_duration_seconds",
    "Time from gRPC call start to answer, by RPC.",
    ["rpc"],
    buckets=LATENCY_BUCKETS,
)

# --- Predictions ---
PREDICTIONS = Counter(
    "mnist_predictions_total",
    "Digits predicted, by model, version that answered and predicted digit.",
    ["model", "version", "digit"],
)
CONFIDENCE = Histogram(
    "mnist_prediction_confidence",
    "Probability of the predicted digit (the top softmax value), by model and version.",
    ["model", "version"],
    buckets=CONFIDENCE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "mnist_batch_size",
    "Images per model call made by the micro-batcher, by model and version.",
    ["model", "version"],
    buckets=BATCH_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "mnist_inference_duration_seconds",
    "Time of one model call (one batch), by model and version.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
FEEDBACK = Counter(
    "mnist_feedback_total",
    "Feedback labels received, by model, the version that answered, and whether the label agrees with "
    "its prediction (agree = the version was right): accuracy in the field per version.",
    ["model", "version", "agreement"],
)
SHADOW_FEEDBACK = Counter(
    "mnist_shadow_feedback_total",
    "Feedback labels of predictions that a shadow version also answered, by whether the label agrees with "
    "the shadow's digit: the candidate's accuracy in the field before it takes traffic.",
    ["model", "shadow_version", "agreement"],
)
# Value 1 per served model version; a gauge because Info is not supported in multiprocess mode.
# livemax: every live worker reports the same models, shown once; a dead worker's models vanish.
MODEL_INFO = Gauge(
    "mnist_model_info",
    "Models being served (value 1), with version and test-set accuracy (0..1) as labels.",
    ["model", "version", "accuracy"],
    multiprocess_mode="livemax",
)
# liveall: one sample per worker (label `pid`): 1 while the version's interpreter is loaded in that worker,
# 0 once it is released, so a rollout can be followed worker by worker.
MODEL_LOADED = Gauge(
    "mnist_model_loaded",
    "Model versions whose interpreter is loaded (1) or released (0), per worker.",
    ["model", "version"],
    multiprocess_mode="liveall",
)
MODEL_LOAD_FAILURES = Counter(
    "mnist_model_load_failures_total",
    "Model versions refused by a load check (metadata, rejected, checksum, accuracy, load, warmup), "
    "counted in each worker that tried them.",
    ["model", "version", "reason"],
)
SHADOW_PREDICTIONS = Counter(
    "mnist_shadow_predictions_total",
    "Shadow predictions (recorded, never returned), by whether they agree with the primary's digit.",
    ["model", "primary_version", "shadow_version", "agreement"],
)

# --- Per-model request statistics (the v2 statistics extension reads them back: service/statistics.py) ---
MODEL_REQUESTS = Counter(
    "mnist_model_requests_total",
    "Inference requests per model and version, by outcome (success, fail) and API (own, tfserving, v2, "
    "v2-grpc).",
    ["model", "version", "outcome", "api"],
)
MODEL_REQUEST_SECONDS = Counter(
    "mnist_model_request_seconds_total",
    "Summed duration of inference requests (start to model answer), by model, version and outcome.",
    ["model", "version", "outcome"],
)
MODEL_QUEUE_SECONDS = Counter(
    "mnist_model_queue_seconds_total",
    "Summed time the requests' images waited in the micro-batcher's queue, by model and version.",
    ["model", "version"],
)
MODEL_COMPUTE_SECONDS = Counter(
    "mnist_model_compute_seconds_total",
    "Summed duration of the model calls the requests' images ran in (one per request and call), by model "
    "and version.",
    ["model", "version"],
)
MODEL_LAST_INFERENCE = Gauge(
    "mnist_model_last_inference_timestamp_seconds",
    "Unix time of the model version's latest successful inference.",
    ["model", "version"],
    multiprocess_mode="max",
)

# --- Overload and deadlines (service/admission.py, the caller's deadline in service/inference.py) ---
REQUESTS_SHED = Counter(
    "mnist_requests_shed_total",
    "Inference requests answered 503 / UNAVAILABLE at once because the worker was full, by model, API "
    "(own, tfserving, v2, v2-grpc) and reason.",
    ["model", "api", "reason"],
)
REQUESTS_EXPIRED = Counter(
    "mnist_requests_expired_total",
    "Inference requests whose caller's deadline passed before the model ran them (dropped, not run, not "
    "recorded; answered 504 / DEADLINE_EXCEEDED), by model, API and stage (arrival: before the queue, "
    "queued: taken from it, waiting: while the model ran).",
    ["model", "api", "stage"],
)

# --- Store and write queue ---
STORE_WRITE_DURATION = Histogram(
    "mnist_store_write_duration_seconds",
    "Time of one store write (one record or one batch), by backend.",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
STORE_ERRORS = Counter(
    "mnist_store_errors_total",
    "Store operations that raised, by backend and operation (write, read, label, health).",
    ["backend", "operation"],
)
WRITE_QUEUE_DEPTH = Gauge(
    "mnist_write_queue_depth",
    "Records waiting in the write-behind queues of all live workers.",
    multiprocess_mode="livesum",
)
WRITE_QUEUE_OVERFLOW = Counter(
    "mnist_write_queue_overflow_total",
    "Records that found the write queue full and were written synchronously in the request thread.",
)

# --- Durable spool (Cassandra outages) ---
SPOOL_DEPTH = Gauge(
    "mnist_spool_depth",
    "Records waiting in the on-disk spool for the store to come back.",
    multiprocess_mode="livesum",
)
SPOOL_BYTES = Gauge(
    "mnist_spool_bytes",
    "Bytes used by the on-disk spool.",
    multiprocess_mode="livesum",
)
SPOOL_REPLAYED = Counter("mnist_spool_replayed_total", "Spooled records written to the store on replay.")
SPOOL_FAILED = Counter("mnist_spool_failed_total", "Spooled records whose replay failed (kept for retry).")
SPOOL_REJECTED = Counter(
    "mnist_spool_rejected_total", "Records the spool could not take (size cap reached); logged with their id."
)

# --- Process ---
# liveall: one sample per live worker (label `pid`), so `sum(mnist_process_resident_memory_bytes)` is the
# server's total and the per-pid series show how work spreads. The default process collector is not
# aggregated in multiprocess mode, hence this gauge.
RESIDENT_MEMORY = Gauge(
    "mnist_process_resident_memory_bytes",
    "Resident memory of each live server process.",
    multiprocess_mode="liveall",
)

_RSS_INTERVAL_S = 1.0
_rss_lock = threading.Lock()
_rss_updated = 0.0


def resident_bytes() -> int:
    """Current RSS from /proc (Linux); the peak RSS from getrusage elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def update_process_metrics(force: bool = False) -> None:
    """Refresh this process's RSS gauge, at most once a second unless forced; cheap enough per request."""
    global _rss_updated
    now = time.monotonic()
    if not force and now - _rss_updated < _RSS_INTERVAL_S:
        return
    with _rss_lock:
        _rss_updated = now
        RESIDENT_MEMORY.set(resident_bytes())


_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Counter | Histogram | Gauge, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: `labels()` takes a lock per call, which request threads
    contend for; a dict lookup does not (a rare duplicate creation is harmless, it returns the same child)."""
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def observe_request(endpoint: str, method: str, status: int | str, seconds: float) -> None:
    """Count one answered HTTP request and its latency (and keep the worker's RSS gauge fresh)."""
    _child(HTTP_REQUESTS, endpoint, method, str(status)).inc()
    _child(HTTP_DURATION, endpoint).observe(seconds)
    update_process_metrics()


def observe_rpc(rpc: str, code: str, seconds: float) -> None:
    """Count one answered gRPC call (`rpc` the method's name, `code` its status code's name)."""
    _child(GRPC_REQUESTS, rpc, code).inc()
    _child(GRPC_DURATION, rpc).observe(seconds)
    update_process_metrics()


def observe_inference(model: str, version: str, api: str, ok: bool, seconds: float) -> None:
    """One inference request of a served model version ended (`seconds` from request start)."""
    outcome = "success" if ok else "fail"
    _child(MODEL_REQUESTS, model, version, outcome, api).inc()
    _child(MODEL_REQUEST_SECONDS, model, version, outcome).inc(seconds)
    if ok:
        _child(MODEL_LAST_INFERENCE, model, version).set(time.time())


def observe_shed(model: str, api: str, reason: str) -> None:
    """One inference request shed by admission control."""
    _child(REQUESTS_SHED, model, api, reason).inc()


def observe_expired(model: str, api: str, stage: str) -> None:
    """One inference request dropped because its caller's deadline had passed."""
    _child(REQUESTS_EXPIRED, model, api, stage).inc()


def observe_jobs(model: str, version: str, queued_seconds: float, jobs: int, compute_seconds: float) -> None:
    """One model call answered `jobs` requests that had waited `queued_seconds` in all."""
    _child(MODEL_QUEUE_SECONDS, model, version).inc(queued_seconds)
    _child(MODEL_COMPUTE_SECONDS, model, version).inc(compute_seconds * jobs)


def observe_predictions(model: str, version: str, digits: list[int], confidences: list[float]) -> None:
    """Count one request's predictions, one counter update per digit seen, and observe every confidence."""
    for digit, count in collections.Counter(digits).items():
        _child(PREDICTIONS, model, version, str(digit)).inc(count)
    confidence = _child(CONFIDENCE, model, version)
    for value in confidences:
        confidence.observe(value)


def observe_batch(model: str, version: str, size: int, seconds: float) -> None:
    """One model call of `size` images that took `seconds`."""
    _child(BATCH_SIZE, model, version).observe(size)
    _child(INFERENCE_DURATION, model, version).observe(seconds)


def _agreement(predicted: int, label: int) -> str:
    return "agree" if predicted == label else "disagree"


def observe_feedback(model: str, version: str, predicted: int, label: int) -> None:
    """Feedback for a prediction of `version`: agreement per version, the live accuracy signal."""
    _child(FEEDBACK, model, version, _agreement(predicted, label)).inc()


def observe_shadow_feedback(model: str, shadow_version: str, predicted: int, label: int) -> None:
    """Feedback for a prediction whose shadow copy `shadow_version` answered `predicted`."""
    _child(SHADOW_FEEDBACK, model, shadow_version, _agreement(predicted, label)).inc()


def set_model_info(model: str, version: str, accuracy: float, serving: bool = True) -> None:
    """Announce the primary version of a model (1), or that it no longer is (0), in this worker."""
    MODEL_INFO.labels(model=model, version=version, accuracy=f"{accuracy:.4f}").set(1 if serving else 0)


def set_model_loaded(model: str, version: str, loaded: bool) -> None:
    """A version's interpreter was loaded (True) or released (False) in this worker."""
    MODEL_LOADED.labels(model=model, version=version).set(1 if loaded else 0)


def model_load_failed(model: str, version: str, reason: str) -> None:
    """A version failed a load check in this worker."""
    MODEL_LOAD_FAILURES.labels(model=model, version=version, reason=reason).inc()


def observe_shadow(
    model: str, primary_version: str, shadow_version: str, agreed: int, disagreed: int
) -> None:
    """Shadow answers of one request, split by agreement with the answers returned."""
    for agreement, count in (("agree", agreed), ("disagree", disagreed)):
        if count:
            _child(SHADOW_PREDICTIONS, model, primary_version, shadow_version, agreement).inc(count)


def multiprocess_dir() -> str | None:
    """prometheus_client's own variable: the one environment read outside Settings, because the library
    decides its storage from it at import time."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry_for_scrape() -> CollectorRegistry:
    """The registry `/metrics` renders: all workers merged in multiprocess mode, else this process."""
    update_process_metrics(force=True)
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render() -> bytes:
    """The Prometheus text exposition of every metric (serve with `CONTENT_TYPE`)."""
    return generate_latest(registry_for_scrape())


def worker_exited(pid: int) -> None:
    """gunicorn `child_exit` hook: drop the `live*` gauge files of a worker that is gone."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)
