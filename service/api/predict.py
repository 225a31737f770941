"""The own API's prediction routes: POST /predict (uploads, raw image, JSON) and GET /api/models."""

from __future__ import annotations

from flask import Blueprint, Response, request

from service.api import errors
from service.api.handler import current, infer, json_response
from service.codecs import own
from service.state import ServiceState
from service.types.own import ModelInfo, ModelList

bp = Blueprint("predict", __name__)
errors.register_own(bp)

_IMAGE_FIELDS = ("image", "file")
_TRUE = {"1", "true", "yes", "on"}


@bp.post("/predict")
def predict() -> Response:
    """One or several images (multipart, JSON base64, JSON pixels or a raw image body) -> digits."""
    decoded, result = infer(
        "predict", _decode, request.args.get("model") or None, request.args.get("version") or None
    )
    include_input = request.args.get("include_input", "").lower() in _TRUE
    return json_response(own.encode(result, decoded.many, include_input))


def _decode(state: ServiceState) -> own.OwnRequest:
    if request.mimetype == "multipart/form-data":
        files = [f.read() for name in _IMAGE_FIELDS for f in request.files.getlist(name)]
        return own.decode_files(files, request.form.get("model"), state.limits)
    return own.decode_body(request.get_data(cache=False), request.mimetype, state.limits)


@bp.get("/api/models")
def models() -> Response:
    """The served models with their version and test-set accuracy."""
    registry = current().models
    listed = ModelList(
        models=[
            ModelInfo(name=m.name, version=m.version, accuracy=m.accuracy, default=name == registry.default)
            for name, m in sorted(registry.models.items())
        ],
        default=registry.default,
    )
    return json_response(listed.model_dump_json().encode())
