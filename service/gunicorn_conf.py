"""gunicorn configuration of `mnist serve`.

`mnist serve` runs `gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`.

gthread workers: each request thread decodes and preprocesses its image (Pillow and numpy release the GIL),
then waits on the per-process micro-batcher. Models are loaded in each worker after the fork (preload_app
off): interpreter threads and the write-queue thread do not survive a fork, and loading takes well under a
second. `post_worker_init` then starts the worker's model-directory watcher (hot reload). The master
imports the heavy libraries, so workers share those pages. On SIGTERM each worker finishes its requests,
then `worker_exit` drains its write queue into the store before the process ends, within
`graceful_timeout`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from service.settings import Settings

_settings = Settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
timeout = _settings.timeout_s
# A worker's exit may also replay its spool for MNIST_SPOOL_DRAIN_S (a spool that dies with its pod).
graceful_timeout = _settings.graceful_timeout_s + math.ceil(_settings.spool_drain_s)
keepalive = 5
backlog = 2048
preload_app = False
# The app writes one JSON access line per request (with model and digit); gunicorn's would duplicate it.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "mnist-service"
# No `gunicornc` control socket: several servers on one host (tests, benchmarks) would fight over its path.
control_socket_disable = True
# Heartbeat files on tmpfs when there is one: a slow disk must not make the arbiter think workers hang.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_created_metrics_dir: str | None = None


def on_starting(server: Any) -> None:
    """Give prometheus_client an empty directory for the workers' metric files before any worker starts."""
    global _created_metrics_dir
    existing = os.environ.get(_MULTIPROC)
    if existing:
        path = Path(existing)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # counts of an earlier run would be added to this one's
            stale.unlink()
    else:
        _created_metrics_dir = tempfile.mkdtemp(prefix="mnist-metrics-")
        os.environ[_MULTIPROC] = _created_metrics_dir
    server.log.info("metrics directory %s", os.environ[_MULTIPROC])
    if _settings.max_inflight > 0 and _settings.threads <= _settings.max_inflight:
        server.log.warning(
            "MNIST_THREADS=%d <= MNIST_MAX_INFLIGHT=%d: HTTP requests beyond the threads wait in gunicorn's "
            "queue and are never shed; give each worker more threads than its bound (docs/operations.md)",
            _settings.threads,
            _settings.max_inflight,
        )
    # Workers fork with the heavy libraries already imported and share those pages (about 45 MB less memory
    # per worker). Not our own modules: service.metrics would give the arbiter metric files of its own.
    import ai_edge_litert.interpreter  # noqa: F401
    import flask  # noqa: F401
    import numpy  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401


def post_worker_init(worker: Any) -> None:
    """In the worker, after its app is loaded: start the thread that watches the model directory (threads
    do not survive a fork, so this is the earliest safe place; `worker_exit`'s shutdown stops it), and serve
    gRPC from this worker's data plane (MNIST_GRPC_PORT, shared by every worker with SO_REUSEPORT; 0 = off;
    grpc is imported here, never in the arbiter)."""
    from service.app import state_of

    app = getattr(worker, "wsgi", None)
    state = state_of(app) if app is not None else None
    if state is None:
        return
    state.models.watch()
    _note_sigterm(worker)
    if _settings.grpc_port:
        from service.grpc import server as grpc_server

        worker.grpc_server = grpc_server.start(state, _settings)
        # The app reported this worker's memory before grpc was imported (its library, the generated protos
        # and the server's threads: ~19 MB). Reported again now, or the gauge keeps the smaller figure until
        # this worker's next request or watcher poll, and that late step looks like growth.
        from service import metrics

        metrics.update_process_metrics(force=True)


# Of the graceful timeout, the part the write queue's drain may use; the rest is for the hand-over of what
# it could not store (one fsync), closing the store and exiting before the arbiter's SIGKILL.
DRAIN_SHARE = 0.75
MIN_DRAIN_S = 0.5


def _note_sigterm(worker: Any) -> None:
    """Remember when SIGTERM came: the arbiter's SIGKILL deadline runs from then, not from `worker_exit`
    (in-flight requests, gRPC and model shutdown come first)."""
    import signal
    import time

    handle_exit = worker.handle_exit

    def on_term(sig: int, frame: Any) -> None:
        if not hasattr(worker, "term_at"):
            worker.term_at = time.monotonic()
        handle_exit(sig, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn's own handler: no EINTR in request threads


def drain_budget(worker: Any, now: float) -> float:
    """Seconds left for the write queue's drain: DRAIN_SHARE of the graceful timeout since SIGTERM."""
    since_term = now - getattr(worker, "term_at", now)
    return max(MIN_DRAIN_S, _settings.graceful_timeout_s * DRAIN_SHARE - since_term)


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, after its last request: end gRPC calls, write every queued record, close the store."""
    import time

    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return  # called in the arbiter for a worker that was already gone
    from service.app import shutdown

    grpc = getattr(worker, "grpc_server", None)
    if grpc is not None:
        from service.grpc import server as grpc_server

        grpc_server.stop(grpc, _settings.graceful_timeout_s * 0.25)

    drained = shutdown(app, timeout=drain_budget(worker, time.monotonic()))
    from service import tracing

    tracing.shutdown()
    server.log.info("worker %s drained %d records on exit", worker.pid, drained)


def child_exit(server: Any, worker: Any) -> None:
    """In the arbiter: drop the live gauges (queue depth, memory, model info) of the worker that ended."""
    # What service.metrics.worker_exited does, without importing (and so instantiating) the metrics here.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
