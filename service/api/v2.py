"""Open Inference Protocol v2 (KServe, Triton, MLServer) over REST, with the binary tensor data extension.

The codec (service/codecs/v2.py) reads the JSON header and the binary part; errors are {"error": "..."}.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from service import v2_info
from service.api import errors, handler
from service.api.handler import current, described, json_response
from service.codecs import v2
from service.errors import NotReady
from service.state import ServiceState
from service.types import v2 as types
from service.types.ops import LoadFailure

bp = Blueprint("v2", __name__, url_prefix="/v2")
errors.register_flat(bp)


def _json(model: types.BaseModel) -> Response:
    return json_response(model.model_dump_json().encode())


@bp.get("")
def server_metadata() -> Response:
    return _json(v2_info.server_metadata(v2_info.REST_EXTENSIONS))


@bp.get("/health/live")
def live() -> Response:
    return _json(types.Live(live=True))


@bp.get("/health/ready")
def ready() -> Response:
    if not current().models.ready:
        raise NotReady("models are not loaded")
    return _json(types.Ready(ready=True))


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    """The model's signature, its loaded versions and the versions refused by a check."""
    registry = current().models
    versions = [version] if version else sorted(registry.versions(name), key=int, reverse=True)
    failures = [LoadFailure(**f.describe()) for f in registry.failures() if f.model == name]
    return _json(v2_info.model_metadata(described(name, version), versions, failures))


@bp.get("/models/<name>/config")
@bp.get("/models/<name>/versions/<version>/config")
def model_config(name: str, version: str | None = None) -> Response:
    """Triton's model configuration extension."""
    return _json(types.ModelConfig.model_validate(v2_info.model_config(current().models.get(name, version))))


@bp.get("/models/stats")
@bp.get("/models/<name>/stats")
@bp.get("/models/<name>/versions/<version>/stats")
def model_statistics(name: str | None = None, version: str | None = None) -> Response:
    """The statistics extension: every model, or one, summed over all workers."""
    stats = v2_info.model_statistics(current().models, name, version)
    return _json(types.StatisticsResponse.model_validate(stats))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    model = described(name, version)
    if not model.batcher.alive:
        raise NotReady(f"model {name!r} is not ready")
    return _json(types.ModelReady(name=model.name, ready=True))


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    decoded, result = handler.infer("v2", _decode, name, version)
    body, header_length = v2.encode(result, decoded)
    if header_length is None:
        return json_response(body)
    response = Response(body, mimetype="application/octet-stream")
    response.headers[v2.HEADER_LENGTH] = str(header_length)
    return response


def _decode(state: ServiceState) -> v2.V2Request:
    return v2.decode(request.get_data(cache=False), request.headers.get(v2.HEADER_LENGTH), state.limits)
