"""TensorFlow Serving's REST API (v1), so clients written for TF Serving work unchanged.

Row format {"instances": [...]} answers {"predictions": [...]}; columnar {"inputs": ...} answers
{"outputs": ...}. Each instance is one image: 28x28, 28x28x1 or 784 numbers in 0..1 or 0..255, or image file
bytes as {"b64": "..."} (TF Serving's JSON for binary), either also wrapped in {"<input name>": ...}.
Errors are {"error": "..."} like TF Serving's.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import MethodNotAllowed

from service.api.predict import decode_base64, decode_upload
from service.errors import BadInput
from service.inference import ServedModel
from service.state import current, request_info
from service.tensors import as_array, images_from_json, is_image_shape, to_batch

bp = Blueprint("tfserving", __name__, url_prefix="/v1/models")

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
MAX_INSTANCES = 1024


def _status(model: ServedModel) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": model.version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


@bp.get("/<name>")
@bp.get("/<name>/versions/<version>")
def model_status(name: str, version: str | None = None) -> Response:
    """GetModelStatus: the served version and its state."""
    _refuse_get_on_verb(name)
    return jsonify(_status(current().models.get(name, version)))


@bp.get("/<name>/metadata")
@bp.get("/<name>/versions/<version>/metadata")
def model_metadata(name: str, version: str | None = None) -> Response:
    """GetModelMetadata: the serving signature (input image, output probabilities)."""
    _refuse_get_on_verb(name)
    model = current().models.get(name, version)
    signature = {
        "inputs": {
            INPUT_NAME: {
                "dtype": "DT_FLOAT",
                "tensor_shape": {
                    "dim": [{"size": "-1"}, {"size": "28"}, {"size": "28"}],
                    "unknown_rank": False,
                },
                "name": "serving_default_image:0",
            }
        },
        "outputs": {
            OUTPUT_NAME: {
                "dtype": "DT_FLOAT",
                "tensor_shape": {"dim": [{"size": "-1"}, {"size": "10"}], "unknown_rank": False},
                "name": "StatefulPartitionedCall:0",
            }
        },
        "method_name": "tensorflow/serving/predict",
    }
    return jsonify(
        model_spec={"name": model.name, "signature_name": "", "version": model.version},
        metadata={"signature_def": {"signature_def": {"serving_default": signature}}},
    )


@bp.post("/<name>:predict")
@bp.post("/<name>/versions/<version>:predict")
def predict(name: str, version: str | None = None) -> Response:
    """Predict: {"instances": [...]} -> {"predictions": [[10 probabilities], ...]}."""
    state = current()
    model = state.models.get(name, version)
    with state.models.arrivals.expect():  # tells the batcher this request's images are coming
        doc = _json_body()
        if "instances" in doc:
            images, key = _instances(doc["instances"]), "predictions"
        elif "inputs" in doc:
            images, key = _inputs(doc["inputs"]), "outputs"
        else:
            raise BadInput("Missing 'instances' or 'inputs' key in the request body")
    g.model = model.name
    predictions, _ = state.predict(images, request_info("tfserving"), model.name, model.version)
    if len(predictions) == 1:
        g.digit = predictions[0].digit
    return jsonify({key: [p.probabilities.tolist() for p in predictions]})


@bp.post("/<name>:<verb>")
@bp.post("/<name>/versions/<version>:<verb>")
def unsupported(name: str, verb: str, version: str | None = None) -> Response:
    """classify and regress need a classification signature, which these models do not export."""
    current().models.get(name, version)
    raise BadInput(f"method {verb!r} is not supported by model {name!r}; use :predict")


def _refuse_get_on_verb(name: str) -> None:
    """GET /v1/models/cnn:predict reaches the status route (the name swallows ':predict'): that is a 405."""
    if ":" in name:
        raise MethodNotAllowed(valid_methods=["POST"], description="use POST for :predict")


def _json_body() -> dict[str, Any]:
    body = request.get_data(cache=False)
    if not body:
        raise BadInput("JSON body is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"JSON parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput("JSON body must be an object with 'instances' or 'inputs'")
    return doc


def _unwrap(value: Any, where: str) -> Any:
    """Named-input form {"image": tensor}: this model has one input, so any single name is it."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise BadInput(f"{where}: the model has one input ({INPUT_NAME!r}), got {sorted(value)}")
        return next(iter(value.values()))
    return value


def _instances(instances: Any) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise BadInput("'instances' must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise BadInput(f"at most {MAX_INSTANCES} instances per request")
    values = [_unwrap(instance, f"instance {i}") for i, instance in enumerate(instances)]
    if any(isinstance(v, dict) or _is_b64(instance) for v, instance in zip(values, instances, strict=True)):
        return np.concatenate([_one_instance(instance, i) for i, instance in enumerate(instances)])
    array = as_array(values, what="instances")
    return to_batch(array, what="instances")


def _is_b64(instance: Any) -> bool:
    return isinstance(instance, dict) and set(instance) == {"b64"}


def _one_instance(instance: Any, i: int) -> np.ndarray:
    """One instance when the list mixes forms: numbers, or image bytes as TF Serving's {"b64": "..."}."""
    where = f"instance {i}"
    value = instance if _is_b64(instance) else _unwrap(instance, where)
    if _is_b64(value):
        return decode_upload(current(), decode_base64(value["b64"], where))[0][np.newaxis]
    return images_from_json(value, what=where)


def _inputs(inputs: Any) -> np.ndarray:
    array = as_array(_unwrap(inputs, "inputs"), what="inputs")
    if is_image_shape(array.shape):  # one image without the batch dimension
        array = array[np.newaxis]
    if array.ndim and len(array) > MAX_INSTANCES:
        raise BadInput(f"at most {MAX_INSTANCES} instances per request")
    return to_batch(array, what="inputs")
