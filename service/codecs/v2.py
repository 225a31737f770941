"""Open Inference Protocol v2 over REST, with the binary tensor data extension.

Input: one tensor, FP32, FP64 or UINT8, shape [N, 784], [N, 28, 28] or [N, 28, 28, 1], as JSON `data` or as
raw little-endian bytes after the JSON header (`Inference-Header-Content-Length`, what tritonclient sends by
default). Outputs: `probabilities` FP32 [N, 10] and `digit` INT64 [N], as JSON or binary as requested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs.body import Limits, read_object
from service.errors import BadInput
from service.tensors import SIDE, as_array, to_batch
from service.types.batch import Inference
from service.types.v2 import INPUT_NAME, OUTPUTS, InferResponse, OutputTensor

HEADER_LENGTH = "Inference-Header-Content-Length"
# datatype -> (numpy little-endian dtype, how to scale to 0..1)
DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "FP32": (np.dtype("<f4"), "auto"),
    "FP64": (np.dtype("<f8"), "auto"),
    "UINT8": (np.dtype("u1"), "byte"),
}
_OUTPUT_TYPES = {"probabilities": "FP32", "digit": "INT64"}
_BATCH_SHAPES = ((SIDE * SIDE,), (SIDE, SIDE), (SIDE, SIDE, 1))


@dataclass(frozen=True)
class V2Request:
    images: np.ndarray  # float32 [n, 28, 28]
    id: str | None  # echoed back when the request had one
    outputs: list[tuple[str, bool]]  # (output name, as binary), in the order asked for


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON inference header and the binary tensor data that may follow it."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise BadInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise BadInput(f"{HEADER_LENGTH}={length} does not fit the {len(body)}-byte body")
    return body[:length], body[length:]


def decode(body: bytes, header_length: str | None, limits: Limits) -> V2Request:
    """An inference request (JSON header + optional binary part) -> images and the outputs wanted."""
    if not body:
        raise BadInput("empty request body: send an inference request")
    header, binary = split(body, header_length)
    doc = read_object(header, what="the inference request", empty="empty inference request header")
    images = _input_images(doc, binary, limits)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadInput(f"'id' must be text, got {json.dumps(request_id)}")
    return V2Request(images, request_id, _wanted(doc))


def _input_images(doc: dict[str, Any], binary: bytes, limits: Limits) -> np.ndarray:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadInput(f"'inputs' must hold exactly one tensor (the model has one input, {INPUT_NAME!r})")
    tensor = inputs[0]
    if not isinstance(tensor.get("name"), str):
        raise BadInput("the input tensor needs a 'name' (text)")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise BadInput(f"input datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    dtype, scale = DATATYPES[datatype]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadInput(f"input shape must be a list of integers, got {json.dumps(shape)}")
    if len(shape) < 2 or tuple(shape[1:]) not in _BATCH_SHAPES:
        raise BadInput(f"input shape must be [N,784], [N,28,28] or [N,28,28,1], got {shape}")
    if shape[0] < 1:
        raise BadInput(f"batch size must be at least 1, got {shape[0]}")
    limits.check_count(shape[0])
    count = int(np.prod(shape))
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput("input 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or size > len(binary):
            raise BadInput(
                f"binary_data_size must be {count * dtype.itemsize} bytes for shape {shape} {datatype}, "
                f"got {size!r} (body has {len(binary)} binary bytes)"
            )
        array = np.frombuffer(binary[:size], dtype=dtype)
    else:
        if tensor.get("data") is None:
            raise BadInput("the input tensor has no 'data' (and no binary_data_size)")
        array = as_array(tensor["data"], what="input data")
        if array.size != count:
            raise BadInput(f"input data has {array.size} values, shape {shape} needs {count}")
        if datatype == "UINT8" and (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
            raise BadInput("UINT8 data must be whole numbers 0..255")
    return to_batch(array.reshape(shape), what="input", scale=scale)


def _wanted(doc: dict[str, Any]) -> list[tuple[str, bool]]:
    """Which outputs to send, each as JSON or binary (default: the request's `binary_data_output`)."""
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadInput("request 'parameters' must be an object")
    binary_default = _flag((params or {}).get("binary_data_output"), "binary_data_output")
    requested = doc.get("outputs")
    if requested is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(requested, list):
        raise BadInput("'outputs' must be a list of {\"name\": ...} objects")
    wanted: list[tuple[str, bool]] = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in _OUTPUT_TYPES:
            raise BadInput(f"unknown output {name!r}; this model has {', '.join(OUTPUTS)}")
        out_params = item.get("parameters")
        if out_params is not None and not isinstance(out_params, dict):
            raise BadInput(f"output {name!r}: 'parameters' must be an object")
        binary = (out_params or {}).get("binary_data")
        wanted.append((name, binary_default if binary is None else _flag(binary, "binary_data")))
    return wanted


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {json.dumps(value)}")
    return value


def encode(result: Inference, request: V2Request) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    tensors = {
        "probabilities": result.probabilities.astype("<f4", copy=False),
        "digit": result.digits.astype("<i8", copy=False),
    }
    outputs: list[OutputTensor] = []
    blobs: list[bytes] = []
    for name, as_binary in request.outputs:
        array = tensors[name]
        if as_binary:
            blob = array.tobytes()
            blobs.append(blob)
            outputs.append(
                OutputTensor(
                    name=name,
                    datatype=_OUTPUT_TYPES[name],
                    shape=list(array.shape),
                    parameters={"binary_data_size": len(blob)},
                )
            )
        else:
            outputs.append(
                OutputTensor(
                    name=name,
                    datatype=_OUTPUT_TYPES[name],
                    shape=list(array.shape),
                    data=array.reshape(-1).tolist(),
                )
            )
    answer = InferResponse(
        model_name=result.model, model_version=result.version, id=request.id, outputs=outputs
    )
    header = answer.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
