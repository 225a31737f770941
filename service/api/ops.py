"""Operations endpoints: liveness, readiness (models loaded, store writable), Prometheus metrics, the spec."""

from __future__ import annotations

import json
import time

from flask import Blueprint, Response, current_app

from service import metrics, openapi
from service.api import errors
from service.api.handler import current, json_response
from service.inference import ServedModel
from service.state import ServiceState
from service.types.ops import Health, LoadFailure, ModelsHealth, QueueHealth, Readiness

bp = Blueprint("ops", __name__)
errors.register_own(bp)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and answering; says nothing about models or store (that is /readyz)."""
    return json_response(Health(status="ok").model_dump_json().encode())


@bp.get("/readyz")
def readyz() -> Response:
    """200 when every model is loaded and the store takes writes, else 503; the detail says which part."""
    state = current()
    models_ok = state.models.ready and not state.stopped
    store = state.store.health()
    ready = models_ok and bool(store.get("ok"))
    body = Readiness(
        status="ready" if ready else "not ready",
        models=ModelsHealth(
            ok=models_ok,
            default=state.models.default,
            served=[m.describe() for versions in _loaded(state) for m in versions],
            failures=[LoadFailure(**f.describe()) for f in state.models.failures()],
        ),
        store=store,
        write_queue=QueueHealth(depth=state.writes.depth, capacity=state.settings.write_queue_size),
        uptime_s=round(time.time() - state.started, 1),
    )
    return json_response(body.model_dump_json().encode(), 200 if ready else 503)


def _loaded(state: ServiceState) -> list[list[ServedModel]]:
    """Every loaded version, model by model, highest version first."""
    registry = state.models
    return [
        sorted(registry.versions(name).values(), key=lambda m: int(m.version), reverse=True)
        for name in sorted(registry.models)
    ]


@bp.get("/metrics")
def prometheus() -> Response:
    """Prometheus text format; merged across gunicorn workers in multiprocess mode."""
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


@bp.get("/openapi.json")
def spec() -> Response:
    """The OpenAPI document, generated from the types, the live model registry and the URL map."""
    state = current()
    document = openapi.spec(
        models=sorted(state.models.models),
        versions=sorted({v for name in state.models.models for v in state.models.versions(name)}, key=int),
        max_images=state.limits.max_images,
        routes=_routes(),
    )
    return json_response(json.dumps(document).encode())


def _routes() -> dict[str, set[str]]:
    """Every served path (OpenAPI spelling) with its methods, as the URL map has them."""
    routes: dict[str, set[str]] = {}
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        path = openapi.path_of(rule.rule)
        routes.setdefault(path, set()).update(
            m.lower() for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}
        )
    return routes
