"""TensorFlow Serving's REST API (v1), so clients written for TF Serving work unchanged.

Errors are {"error": "..."} like TF Serving's. A name or version that ends a path excludes ':', so
`GET /v1/models/cnn:predict` is a 405 (only POST serves it), not a status request for a model "cnn:predict".
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.routing import BaseConverter

from service.api import errors
from service.api.handler import VERSION_HEADER, current, described, infer, json_response
from service.codecs import tfserving
from service.errors import BadInput
from service.state import ServiceState
from service.types import tfserving as types


class ModelName(BaseConverter):
    """A model name or version in a TF Serving path: no '/' and no ':' (':' starts the method, ':predict')."""

    regex = "[^/:]+"


bp = Blueprint("tfserving", __name__, url_prefix="/v1/models")
bp.record_once(lambda setup: setup.app.url_map.converters.update(model=ModelName))
errors.register_flat(bp)


@bp.get("/<model:name>")
@bp.get("/<name>/versions/<model:version>")
def model_status(name: str, version: str | None = None) -> Response:
    """GetModelStatus: every version the worker knows of with its state (AVAILABLE, UNLOADING, END with the
    reason it was refused), or the one named."""
    registry = current().models
    rows = [row for row in registry.status(name) if version is None or row["version"] == version]
    if not rows:
        registry.get(name, version)  # the 404 that says what is served
    return json_response(types.status(rows).model_dump_json().encode())


@bp.get("/<name>/metadata")
@bp.get("/<name>/versions/<version>/metadata")
def model_metadata(name: str, version: str | None = None) -> Response:
    """GetModelMetadata: the serving signature (input image, output probabilities)."""
    model = described(name, version)
    return json_response(types.metadata(model.name, model.version).model_dump_json().encode())


@bp.post("/<model:name>:predict")
@bp.post("/<name>/versions/<model:version>:predict")
def predict(name: str, version: str | None = None) -> Response:
    """Predict: {"instances": [...]} -> {"predictions": [[10 probabilities], ...]}."""
    decoded, result = infer("tfserving", _decode, name, version)
    response = json_response(tfserving.encode(result, decoded.columnar))
    response.headers[VERSION_HEADER] = result.version  # TF Serving's REST answer has no model_spec
    return response


def _decode(state: ServiceState) -> tfserving.TFRequest:
    return tfserving.decode(request.get_data(cache=False), state.limits)


@bp.post("/<model:name>:<verb>")
@bp.post("/<name>/versions/<model:version>:<verb>")
def unsupported(name: str, verb: str, version: str | None = None) -> Response:
    """classify and regress need a classification signature, which these models do not export."""
    current().models.get(name, version)
    raise BadInput(f"method {verb!r} is not supported by model {name!r}; use :predict")
