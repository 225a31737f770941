"""Open Inference Protocol v2 over gRPC: `ModelInferRequest` -> images, results -> `ModelInferResponse`.

The messages are the generated classes tritonclient ships (tritonclient.grpc.service_pb2). The input comes
as `raw_input_contents` (what tritonclient sends) or as typed `contents` (fp32/fp64/uint/int64 fields);
the tensor checks, datatypes, classification and BYTES encoding are those of the REST codec
(service/codecs/v2.py), so both doors refuse the same input with the same message. Outputs always go back as
`raw_output_contents`, as Triton answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from service.codecs import v2
from service.codecs.body import Limits
from service.errors import BadInput
from service.types.batch import Inference
from service.types.v2 import INPUT_NAME

# datatype -> the typed `contents` field that carries it
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "UINT8": "uint_contents",
    "INT64": "int64_contents",
}


def parameters(params: Any) -> dict[str, Any]:
    """A protobuf `map<string, InferParameter>` -> plain Python values."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, which) if which else None
    return out


def decode(request: service_pb2.ModelInferRequest, limits: Limits) -> v2.V2Request:
    """A ModelInferRequest -> images and the outputs wanted (BadInput says what is wrong)."""
    if len(request.inputs) != 1:
        raise BadInput(f"'inputs' must hold exactly one tensor (the model has one input, {INPUT_NAME!r})")
    tensor = request.inputs[0]
    if not tensor.name:
        raise BadInput("the input tensor needs a 'name'")
    kind = v2.datatype_of(tensor.datatype)
    shape = list(tensor.shape)
    count = v2.check_shape(shape, limits)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise BadInput(
                f"raw_input_contents must hold one entry per input (1), got {len(request.raw_input_contents)}"
            )
        images = v2.images_from_bytes(request.raw_input_contents[0], tensor.datatype, shape, count)
    else:
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise BadInput(f"{tensor.datatype} input must come as raw_input_contents, not typed contents")
        values = getattr(tensor.contents, field)
        if not values:
            raise BadInput(f"the input tensor has no data: send raw_input_contents or contents.{field}")
        images = v2.images_from_numbers(np.asarray(values, dtype=kind.dtype), tensor.datatype, shape, count)
    priority, timeout = v2.request_options(parameters(request.parameters))
    return v2.V2Request(images, request.id or None, _wanted(request), priority, timeout)


def _wanted(request: service_pb2.ModelInferRequest) -> list[v2.Wanted]:
    if not request.outputs:
        return [v2.Wanted(name) for name in v2.OUTPUT_TYPES]
    wanted = []
    for item in request.outputs:
        wanted.append(v2.wanted_output(item.name, True, parameters(item.parameters)))
    return wanted


def encode(result: Inference, request: v2.V2Request) -> service_pb2.ModelInferResponse:
    """The answer, every output as raw little-endian bytes (BYTES: 4-byte length before each element)."""
    response = service_pb2.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request.id or ""
    )
    for wanted, datatype, array in v2.output_arrays(result, request.outputs):
        response.outputs.add(name=wanted.name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(v2.tensor_bytes(datatype, array))
    return response
