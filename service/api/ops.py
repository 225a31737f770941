"""Operations endpoints: liveness, readiness (models loaded, store writable) and Prometheus metrics."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from service import metrics
from service.state import current

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and answering; says nothing about models or store (that is /readyz)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when every model is loaded and the store takes writes, else 503; the detail says which part."""
    state = current()
    models_ok = state.models.ready and not state.stopped
    store = state.store.health()
    ready = models_ok and bool(store.get("ok"))
    body = {
        "status": "ready" if ready else "not ready",
        "models": {
            "ok": models_ok,
            "default": state.models.default,
            "served": [m.describe() for m in state.models.models.values()],
        },
        "store": store,
        "write_queue": {"depth": state.writes.depth, "capacity": state.settings.write_queue_size},
        "uptime_s": round(time.time() - state.started, 1),
    }
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def prometheus() -> Response:
    """Prometheus text format; merged across gunicorn workers in multiprocess mode."""
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)
