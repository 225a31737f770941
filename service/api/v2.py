"""Open Inference Protocol v2 (KServe, Triton, MLServer) over REST, with the binary tensor data extension.

Input: one tensor, FP32 or UINT8, shape [N, 784], [N, 28, 28] or [N, 28, 28, 1], as JSON `data` or as raw
little-endian bytes after the JSON header (`Inference-Header-Content-Length`, what tritonclient sends by
default). Outputs: `probabilities` FP32 [N, 10] and `digit` INT64 [N], as JSON or binary as requested.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request

from service import __version__
from service.errors import BadInput, ServiceError
from service.inference import ServedModel
from service.state import current, request_info
from service.tensors import SIDE, as_array, to_batch

bp = Blueprint("v2", __name__, url_prefix="/v2")

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "image"
OUTPUTS = ("probabilities", "digit")
# datatype -> (numpy little-endian dtype, how to scale to 0..1)
DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "FP32": (np.dtype("<f4"), "auto"),
    "FP64": (np.dtype("<f8"), "auto"),
    "UINT8": (np.dtype("u1"), "byte"),
}
_BATCH_SHAPES = ((SIDE * SIDE,), (SIDE, SIDE), (SIDE, SIDE, 1))
MAX_BATCH = 1024


class NotReady(ServiceError):
    code = "not_ready"
    status = 503


@bp.get("")
def server_metadata() -> Response:
    return jsonify(name="mnist-service", version=__version__, extensions=["binary_tensor_data"])


@bp.get("/health/live")
def live() -> Response:
    return jsonify(live=True)


@bp.get("/health/ready")
def ready() -> Response:
    if not current().models.ready:
        raise NotReady("models are not loaded")
    return jsonify(ready=True)


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    model = current().models.get(name, version)
    return jsonify(
        name=model.name,
        versions=[model.version],
        platform="tflite",
        inputs=[{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, SIDE, SIDE]}],
        outputs=[
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
        ],
        parameters={"accuracy": model.accuracy},
    )


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    model = current().models.get(name, version)
    if not model.batcher.alive:
        raise NotReady(f"model {name!r} is not ready")
    return jsonify(name=model.name, ready=True)


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    state = current()
    model = state.models.get(name, version)
    with state.models.arrivals.expect():  # tells the batcher this request's images are coming
        doc, binary = _split_body()
        images = _input_images(doc, binary)
    g.model = model.name
    predictions, _ = state.predict(images, request_info("v2"), model.name, model.version)
    if len(predictions) == 1:
        g.digit = predictions[0].digit
    tensors = {
        "probabilities": np.stack([p.probabilities for p in predictions]).astype("<f4"),
        "digit": np.array([p.digit for p in predictions], dtype="<i8"),
    }
    return _response(doc, model, tensors)


def _split_body() -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data that may follow it."""
    body = request.get_data(cache=False)
    if not body:
        raise BadInput("empty request body: send an inference request")
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise BadInput(f"{HEADER_LENGTH}={length} does not fit the {len(body)}-byte body")
        header, binary = body[:length], body[length:]
    else:
        header, binary = body, b""
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"invalid JSON in the inference request: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput("the inference request must be a JSON object")
    return doc, binary


def _input_images(doc: dict[str, Any], binary: bytes) -> np.ndarray:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadInput(f"'inputs' must hold exactly one tensor (the model has one input, {INPUT_NAME!r})")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise BadInput(f"input datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    dtype, scale = DATATYPES[datatype]
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadInput(f"input shape must be a list of non-negative integers, got {json.dumps(shape)}")
    if tuple(shape[1:]) not in _BATCH_SHAPES:
        raise BadInput(f"input shape must be [N,784], [N,28,28] or [N,28,28,1], got {shape}")
    if not 0 < shape[0] <= MAX_BATCH:
        raise BadInput(f"batch size must be 1..{MAX_BATCH}, got {shape[0]}")
    count = int(np.prod(shape))
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput("input 'parameters' must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or size != count * dtype.itemsize or size > len(binary):
            raise BadInput(
                f"binary_data_size must be {count * dtype.itemsize} bytes for shape {shape} {datatype}, "
                f"got {size!r} (body has {len(binary)} binary bytes)"
            )
        array = np.frombuffer(binary[:size], dtype=dtype)
    else:
        if "data" not in tensor:
            raise BadInput("the input tensor has no 'data' (and no binary_data_size)")
        array = as_array(tensor["data"], what="input data")
        if array.size != count:
            raise BadInput(f"input data has {array.size} values, shape {shape} needs {count}")
        if datatype == "UINT8" and (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
            raise BadInput("UINT8 data must be whole numbers 0..255")
    return to_batch(array.reshape(shape), what="input", scale=scale)


def _response(doc: dict[str, Any], model: ServedModel, tensors: dict[str, np.ndarray]) -> Response:
    requested = doc.get("outputs")
    params = doc.get("parameters")
    if not isinstance(params, dict):
        params = {}
    binary_default = bool(params.get("binary_data_output", False))
    wanted: list[tuple[str, bool]] = []
    if requested is None:
        wanted = [(name, binary_default) for name in OUTPUTS]
    else:
        if not isinstance(requested, list):
            raise BadInput("'outputs' must be a list of {\"name\": ...} objects")
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if name not in tensors:
                raise BadInput(f"unknown output {name!r}; this model has {', '.join(OUTPUTS)}")
            out_params = item.get("parameters") or {}
            wanted.append((name, bool(out_params.get("binary_data", binary_default))))
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, as_binary in wanted:
        array = tensors[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": "FP32" if name == "probabilities" else "INT64",
            "shape": list(array.shape),
        }
        if as_binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if "id" in doc:
        body["id"] = doc["id"]
    if not blobs:
        return jsonify(body)
    header = json.dumps(body, separators=(",", ":")).encode()
    response = Response(header + b"".join(blobs), mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(header))
    return response
