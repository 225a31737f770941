"""Open Inference Protocol v2 over REST, with the binary tensor data and classification extensions.

Input: one tensor, FP32, FP64, FP16 (binary only), UINT8 or INT64, shape [N, 784], [N, 28, 28] or
[N, 28, 28, 1], as JSON `data` or as raw little-endian bytes after the JSON header
(`Inference-Header-Content-Length`, what tritonclient sends by default). Outputs: `probabilities` FP32 [N, 10]
and `digit` INT64 [N], as JSON or binary as requested; the output parameter `classification: k` (alias
`class_count`) on `probabilities` answers the top k classes instead, as BYTES [N, k] strings
"<score>:<index>:<label>". The tensor checks, the classification and
the BYTES encoding are shared with the gRPC codec (service/codecs/v2_grpc.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs.body import Limits, read_object
from service.errors import BadInput
from service.tensors import SIDE, as_array, to_batch
from service.types.batch import Inference
from service.types.v2 import INPUT_NAME, OUTPUTS, InferResponse, OutputTensor

HEADER_LENGTH = "Inference-Header-Content-Length"
CLASSES = 10


@dataclass(frozen=True)
class Datatype:
    """How a v2 input datatype reaches the model's float32 0..1 images."""

    dtype: np.dtype[Any]  # little-endian, as the binary extension and raw_input_contents carry it
    scale: str  # see tensors.to_batch: "auto" (0..1 or 0..255 per image) or "byte" (0..255)
    as_numbers: bool  # may come as JSON numbers / typed gRPC contents (FP16 has no such form)


DATATYPES: dict[str, Datatype] = {
    "FP32": Datatype(np.dtype("<f4"), "auto", True),
    "FP64": Datatype(np.dtype("<f8"), "auto", True),
    "FP16": Datatype(np.dtype("<f2"), "auto", False),
    "UINT8": Datatype(np.dtype("u1"), "byte", True),
    "INT64": Datatype(np.dtype("<i8"), "byte", True),
}
OUTPUT_TYPES = {"probabilities": "FP32", "digit": "INT64"}
CLASSIFICATION_TYPE = "BYTES"
_BATCH_SHAPES = ((SIDE * SIDE,), (SIDE, SIDE), (SIDE, SIDE, 1))


@dataclass(frozen=True)
class Wanted:
    """One requested output: its name, JSON or binary, and the classification's k (0 = the tensor itself)."""

    name: str
    binary: bool = False
    class_count: int = 0


@dataclass(frozen=True)
class V2Request:
    images: np.ndarray  # float32 [n, 28, 28]
    id: str | None  # echoed back when the request had one
    outputs: list[Wanted]  # in the order asked for
    priority: int = 0  # accepted (the batcher has one queue, so every priority is served alike)
    timeout_us: int = 0  # the caller's deadline, microseconds from the request's start; 0 = none


def datatype_of(name: Any) -> Datatype:
    if name not in DATATYPES:
        raise BadInput(f"input datatype must be one of {', '.join(DATATYPES)}, got {name!r}")
    return DATATYPES[name]


def check_shape(shape: Sequence[Any], limits: Limits) -> int:
    """The number of values an input of this shape holds; BadInput unless it is N images, N in 1..cap."""
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadInput(f"input shape must be a list of integers, got {json.dumps(list(shape))}")
    if len(shape) < 2 or tuple(shape[1:]) not in _BATCH_SHAPES:
        raise BadInput(f"input shape must be [N,784], [N,28,28] or [N,28,28,1], got {list(shape)}")
    if shape[0] < 1:
        raise BadInput(f"batch size must be at least 1, got {shape[0]}")
    limits.check_count(shape[0])
    return int(np.prod(shape))


def images_from_bytes(raw: bytes, datatype: str, shape: Sequence[int], count: int) -> np.ndarray:
    """Raw little-endian tensor bytes (binary extension, gRPC raw_input_contents) -> float32 images."""
    kind = DATATYPES[datatype]
    if len(raw) != count * kind.dtype.itemsize:
        raise BadInput(
            f"the input data must be {count * kind.dtype.itemsize} bytes for shape {list(shape)} {datatype}, "
            f"got {len(raw)}"
        )
    return to_batch(np.frombuffer(raw, dtype=kind.dtype).reshape(shape), what="input", scale=kind.scale)


def images_from_numbers(array: np.ndarray, datatype: str, shape: Sequence[int], count: int) -> np.ndarray:
    """Numbers (JSON `data`, gRPC typed contents) -> float32 images."""
    kind = DATATYPES[datatype]
    if not kind.as_numbers:
        raise BadInput(f"{datatype} input must come as binary data (raw bytes), not as numbers")
    if array.size != count:
        raise BadInput(f"input data has {array.size} values, shape {list(shape)} needs {count}")
    if kind.scale == "byte" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise BadInput(f"{datatype} data must be whole numbers 0..255")
    return to_batch(array.reshape(shape), what="input", scale=kind.scale)


def wanted_output(name: Any, binary: bool, params: dict[str, Any]) -> Wanted:
    """One entry of the request's `outputs`, checked. The classification extension's parameter is
    `classification` (what tritonclient sends, REST and gRPC); `class_count` is taken as its alias."""
    class_count = params.get("classification", params.get("class_count"))
    if name not in OUTPUT_TYPES:
        raise BadInput(f"unknown output {name!r}; this model has {', '.join(OUTPUTS)}")
    if class_count is None or class_count == 0:
        return Wanted(name, binary)
    if not isinstance(class_count, int) or isinstance(class_count, bool) or class_count < 0:
        raise BadInput(
            f"classification (class_count) must be a whole number >= 0, got {json.dumps(class_count)}"
        )
    if name != "probabilities":
        raise BadInput(f"classification applies to 'probabilities' (the class scores), not {name!r}")
    return Wanted(name, binary, min(class_count, CLASSES))


def request_options(params: dict[str, Any]) -> tuple[int, int]:
    """`priority` and `timeout` (microseconds) of the request parameters, checked; others are ignored."""
    values = []
    for key in ("priority", "timeout"):
        value = params.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadInput(f"request parameter {key!r} must be a whole number >= 0, got {json.dumps(value)}")
        values.append(value)
    return values[0], values[1]


def classify(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The top k classes of each row as "<score>:<index>:<label>" bytes, best first: object array [n, k]."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    rows = [
        [f"{row[i]:f}:{i}:{i}".encode() for i in indexes]
        for row, indexes in zip(probabilities, top, strict=True)
    ]
    out = np.empty((len(rows), k), dtype=object)
    out[:] = rows
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor as the binary extension and gRPC carry it: each element's 4-byte LE length, then it."""
    return b"".join(struct.pack("<I", len(item)) + item for item in array.reshape(-1))


def output_arrays(result: Inference, wanted: Sequence[Wanted]) -> list[tuple[Wanted, str, np.ndarray]]:
    """The requested outputs as (request, datatype, array), in the order asked for."""
    out = []
    for item in wanted:
        if item.class_count:
            out.append((item, CLASSIFICATION_TYPE, classify(result.probabilities, item.class_count)))
        elif item.name == "probabilities":
            out.append((item, "FP32", result.probabilities.astype("<f4", copy=False)))
        else:
            out.append((item, "INT64", result.digits.astype("<i8", copy=False)))
    return out


def tensor_bytes(datatype: str, array: np.ndarray) -> bytes:
    return serialize_bytes(array) if datatype == CLASSIFICATION_TYPE else array.tobytes()


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
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadInput("request 'parameters' must be an object")
    priority, timeout = request_options(params or {})
    return V2Request(images, request_id, _wanted(doc, params or {}), priority, timeout)


def _input_images(doc: dict[str, Any], binary: bytes, limits: Limits) -> np.ndarray:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadInput(f"'inputs' must hold exactly one tensor (the model has one input, {INPUT_NAME!r})")
    tensor = inputs[0]
    if not isinstance(tensor.get("name"), str):
        raise BadInput("the input tensor needs a 'name' (text)")
    datatype = tensor.get("datatype")
    kind = datatype_of(datatype)
    shape = tensor.get("shape")
    if not isinstance(shape, list):
        raise BadInput(f"input shape must be a list of integers, got {json.dumps(shape)}")
    count = check_shape(shape, limits)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput("input 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * kind.dtype.itemsize or size > len(binary):
            raise BadInput(
                f"binary_data_size must be {count * kind.dtype.itemsize} bytes for shape {shape} {datatype}, "
                f"got {size!r} (body has {len(binary)} binary bytes)"
            )
        return images_from_bytes(binary[:size], str(datatype), shape, count)
    if tensor.get("data") is None:
        raise BadInput("the input tensor has no 'data' (and no binary_data_size)")
    return images_from_numbers(as_array(tensor["data"], what="input data"), str(datatype), shape, count)


def _wanted(doc: dict[str, Any], params: dict[str, Any]) -> list[Wanted]:
    """Which outputs to send, each as JSON or binary (default: the request's `binary_data_output`)."""
    binary_default = _flag(params.get("binary_data_output"), "binary_data_output")
    requested = doc.get("outputs")
    if requested is None:
        return [Wanted(name, binary_default) for name in OUTPUTS]
    if not isinstance(requested, list):
        raise BadInput("'outputs' must be a list of {\"name\": ...} objects")
    wanted: list[Wanted] = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        out_params = item.get("parameters") if isinstance(item, dict) else None
        if out_params is not None and not isinstance(out_params, dict):
            raise BadInput(f"output {name!r}: 'parameters' must be an object")
        binary = (out_params or {}).get("binary_data")
        as_binary = binary_default if binary is None else _flag(binary, "binary_data")
        wanted.append(wanted_output(name, as_binary, out_params or {}))
    return wanted


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {json.dumps(value)}")
    return value


def encode(result: Inference, request: V2Request) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    outputs: list[OutputTensor] = []
    blobs: list[bytes] = []
    for wanted, datatype, array in output_arrays(result, request.outputs):
        if wanted.binary:
            blob = tensor_bytes(datatype, array)
            blobs.append(blob)
            outputs.append(
                OutputTensor(
                    name=wanted.name,
                    datatype=datatype,
                    shape=list(array.shape),
                    parameters={"binary_data_size": len(blob)},
                )
            )
        else:
            values = array.reshape(-1).tolist()
            if datatype == CLASSIFICATION_TYPE:
                values = [value.decode() for value in values]
            outputs.append(
                OutputTensor(name=wanted.name, datatype=datatype, shape=list(array.shape), data=values)
            )
    answer = InferResponse(
        model_name=result.model, model_version=result.version, id=request.id, outputs=outputs
    )
    header = answer.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
