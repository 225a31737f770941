"""create_app(settings): wires settings, models, store, write queue and blueprints; nothing else.

gunicorn calls `create_app()` in each worker (see service/gunicorn_conf.py), so every process loads its own
models and starts its own threads; nothing happens at import time.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import time

import numpy as np
from flask import Flask, Response, g, request
from PIL import Image

from service import metrics, tracing
from service.api import errors, export, ops, predict, records, repository, tfserving, v2, web
from service.api.handler import EXTENSION
from service.api.hotpath import HotPath
from service.inference import ModelRegistry
from service.logs import configure_logging, log_request, request_id
from service.preprocess import preprocess
from service.settings import Settings
from service.state import ServiceState
from service.store.factory import open_store
from service.store.peers import WriteNotices
from service.store.queue import WriteQueue

log = logging.getLogger(__name__)

BLUEPRINTS = (predict.bp, records.bp, export.bp, tfserving.bp, v2.bp, repository.bp, ops.bp, web.bp)


def create_app(settings: Settings | None = None) -> Flask:
    """A ready app: models loaded and warmed up, store open, write queue running."""
    settings = settings or Settings()
    configure_logging(settings)
    tracing.configure()
    app = Flask("service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes

    models = ModelRegistry.load(settings)
    store = open_store(settings)
    # The workers of one server share the spool folder: their write notices meet there.
    notices = WriteNotices.open(settings.spool_dir)
    writes = WriteQueue(
        store,
        settings.write_queue_size,
        notices=notices,
        durability=settings.durability,
        journal_dir=settings.spool_dir,
        journal_max_bytes=settings.spool_max_bytes,
        ack_timeout_s=settings.durability_timeout_s,
        spool_drain_s=settings.spool_drain_s,
    ).start()
    app.extensions[EXTENSION] = ServiceState(settings, models, store, writes)

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    errors.register_app(app)
    origins = _allowed_origins(settings.cors_origins)
    _install_request_hooks(app, origins)
    app.wsgi_app = HotPath(app, app.extensions[EXTENSION], cors=bool(origins))  # type: ignore[method-assign]
    _warm_up_decoding(app, settings)
    metrics.update_process_metrics(force=True)  # memory is reported before the first request, too
    log.info(
        "serving %s (default %s), store %s",
        ", ".join(f"{m.name} v{m.version}" for m in models.models.values()),
        models.default,
        store.backend,
    )
    return app


def state_of(app: Flask) -> ServiceState | None:
    """The data plane of an app built by `create_app` (None for any other app)."""
    return app.extensions.get(EXTENSION)


def shutdown(app: Flask, timeout: float) -> int:
    """Finish queued work of this worker (gunicorn's worker_exit): returns the records drained."""
    state = state_of(app)
    if state is None:
        return 0
    started = time.monotonic()
    drained = state.shutdown(timeout)
    log.info(
        "worker stopped: %d queued records written in %.3fs, %d left",
        drained,
        time.monotonic() - started,
        state.writes.depth,
        extra={"drained": drained, "left": state.writes.depth},
    )
    return drained


def _warm_up_decoding(app: Flask, settings: Settings) -> None:
    """Parse and preprocess one synthetic upload now: Pillow's plugins and the multipart parser load lazily,
    which would otherwise cost each worker's first real request tens of milliseconds."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 12:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    png = buffer.getvalue()
    with app.test_request_context("/", method="POST", data={"image": (io.BytesIO(png), "warm-up.png")}):
        request.files.getlist("image")
    preprocess(png, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)


@functools.lru_cache(maxsize=512)
def _route_label(rule: str) -> str:
    """The route template for metrics and logs, without converter names ("<model:name>" -> "<name>")."""
    return re.sub(r"<\w+:", "<", rule)


def _allowed_origins(setting: str) -> set[str]:
    return {origin.strip() for origin in setting.split(",") if origin.strip()}


def _install_request_hooks(app: Flask, origins: set[str]) -> None:
    """Request id in and out, one access log line, request metrics, CORS."""

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        if tracing.ENABLED:
            rule = request.url_rule
            g.span = tracing.server_span(
                f"{request.method} {_route_label(rule.rule) if rule is not None else 'unmatched'}",
                request.headers,
                **{
                    "http.request.method": request.method,
                    "url.path": request.path,
                    "request.id": g.request_id,
                },
            )
        if request.method == "OPTIONS" and origins and request.headers.get("Access-Control-Request-Method"):
            return Response(status=204)  # CORS preflight; headers are added below
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = g.get("request_id") or request_id(None)
        response.headers["X-Request-ID"] = rid
        if origins:
            _cors(response, origins)
        started = g.get("started", time.perf_counter())
        seconds = time.perf_counter() - started
        # Each `request.` goes through a context-local proxy: look things up once per request.
        rule, method, status = request.url_rule, request.method, response.status_code
        route = _route_label(rule.rule) if rule is not None else None
        metrics.observe_request(route or "unmatched", method, status, seconds)
        trace_id = None
        span = g.pop("span", None) if tracing.ENABLED else None
        if span is not None:
            trace_id = span.trace_id
            response.headers[tracing.TRACEPARENT] = span.traceparent()
            span.end(status, status >= 500)
        log_request(
            request_id=rid,
            route=route or request.path,
            method=method,
            status=status,
            latency_ms=seconds * 1000,
            client=request.remote_addr,
            model=g.get("model"),
            digit=g.get("digit"),
            **({"trace_id": trace_id} if trace_id else {}),
        )
        return response


def _cors(response: Response, origins: set[str]) -> None:
    origin = request.headers.get("Origin")
    if not origin:
        return
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    else:
        return
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = (
        "Content-Type, X-Request-ID, Inference-Header-Content-Length"
    )
    response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Inference-Header-Content-Length"
