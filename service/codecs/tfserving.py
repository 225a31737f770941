"""TensorFlow Serving's REST predict (v1): {"instances": [...]} -> {"predictions": [...]}, columnar
{"inputs": ...} -> {"outputs": ...}.

Each instance is one image: 28x28, 28x28x1 or 784 numbers in 0..1 or 0..255, or an image file as
{"b64": "..."} (TF Serving's JSON for binary), either also wrapped in {"<input name>": ...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.codecs.body import Limits, read_object
from service.codecs.images import decode_base64, decode_image
from service.errors import BadInput
from service.tensors import as_array, images_from_json, is_image_shape, to_batch
from service.types.batch import Inference
from service.types.tfserving import INPUT_NAME, ColumnResponse, RowResponse

_FIELDS = {"signature_name", "instances", "inputs"}


@dataclass(frozen=True)
class TFRequest:
    images: np.ndarray  # float32 [n, 28, 28]
    columnar: bool  # answer {"outputs"} rather than {"predictions"}


def decode(body: bytes, limits: Limits) -> TFRequest:
    """A predict request body -> the images, and which format to answer in."""
    doc = read_object(body, what="the JSON body", empty="JSON body is empty")
    unknown = set(doc) - _FIELDS
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)}; a predict request has {sorted(_FIELDS)}")
    signature = doc.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise BadInput("'signature_name' must be text")
    if "instances" in doc and "inputs" in doc:
        raise BadInput("send either 'instances' (row format) or 'inputs' (columnar), not both")
    if "instances" in doc:
        return TFRequest(_instances(doc["instances"], limits), columnar=False)
    if "inputs" in doc:
        return TFRequest(_inputs(doc["inputs"], limits), columnar=True)
    raise BadInput("Missing 'instances' or 'inputs' key in the request body")


def encode(result: Inference, columnar: bool) -> bytes:
    probabilities = result.probabilities.tolist()
    if columnar:
        return ColumnResponse(outputs=probabilities).model_dump_json().encode()
    return RowResponse(predictions=probabilities).model_dump_json().encode()


def _unwrap(value: Any, where: str) -> Any:
    """Named-input form {"image": tensor}: this model has one input, so any single name is it."""
    if isinstance(value, dict) and not _is_b64(value):
        if len(value) != 1:
            raise BadInput(f"{where}: the model has one input ({INPUT_NAME!r}), got {sorted(value)}")
        return next(iter(value.values()))
    return value


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _instances(instances: Any, limits: Limits) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise BadInput("'instances' must be a non-empty list")
    limits.check_count(len(instances))
    values = [_unwrap(instance, f"instance {i}") for i, instance in enumerate(instances)]
    if any(isinstance(v, dict) for v in values):
        return np.concatenate([_one_instance(v, i, limits) for i, v in enumerate(values)])
    return to_batch(as_array(values, what="instances"), what="instances")


def _one_instance(value: Any, i: int, limits: Limits) -> np.ndarray:
    """One instance when the list mixes forms: numbers, or image bytes as TF Serving's {"b64": "..."}."""
    where = f"instance {i}"
    if _is_b64(value):
        return decode_image(decode_base64(value["b64"], where), limits)[0][np.newaxis]
    if isinstance(value, dict):
        raise BadInput(f'{where}: expected numbers or {{"b64": "..."}}, got an object with {sorted(value)}')
    return images_from_json(value, what=where)


def _inputs(inputs: Any, limits: Limits) -> np.ndarray:
    array = as_array(_unwrap(inputs, "inputs"), what="inputs")
    if is_image_shape(array.shape):  # one image without the batch dimension
        array = array[np.newaxis]
    if array.ndim:
        limits.check_count(len(array))
    return to_batch(array, what="inputs")
