"""Open Inference Protocol v2 (REST) shapes: inference request/response, server and model metadata, health."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.types.ops import LoadFailure

INPUT_NAME = "image"
OUTPUTS = ("probabilities", "digit")
InputDatatype = Literal["FP32", "FP64", "UINT8"]
# The batch dimension; its maximum is the batch cap (MNIST_MAX_IMAGES_PER_REQUEST), set by service/openapi.py.
BatchDim = Annotated[int, Field(ge=1, json_schema_extra={"x-batch-dim": True})]
Value = Annotated[float, Field(ge=0, le=255)]


class InputParameters(BaseModel):
    binary_data_size: int | None = Field(
        None, ge=0, description="Bytes of this tensor in the binary part (Inference-Header-Content-Length)"
    )


class InputTensor(BaseModel):
    """The one input: N images as [N, 784], [N, 28, 28] or [N, 28, 28, 1]; UINT8 0..255, floats 0..1/0..255.

    `data` holds exactly prod(shape) numbers, or `binary_data_size` names the binary part.
    """

    name: str
    shape: (
        tuple[BatchDim, Literal[784]]
        | tuple[BatchDim, Literal[28], Literal[28]]
        | tuple[BatchDim, Literal[28], Literal[28], Literal[1]]
    ) = Field(description="[N, 784], [N, 28, 28] or [N, 28, 28, 1]; N images, 1..the batch cap")
    datatype: InputDatatype
    parameters: InputParameters | None = None
    data: list[Value] | None = Field(None, description="prod(shape) numbers, row-major")


class OutputParameters(BaseModel):
    binary_data: bool | None = None


class RequestedOutput(BaseModel):
    name: Literal["probabilities", "digit"]
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    binary_data_output: bool | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str = Field(description="probabilities or digit")
    datatype: str = Field(description="FP32 (probabilities) or INT64 (digit)")
    shape: list[int]
    data: list[float | int] | None = None
    parameters: dict[str, int] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The loaded versions (or the one named), highest first")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, float]
    failures: list[LoadFailure] = Field(
        default_factory=list, description="Versions of this model refused by a check (never served)"
    )


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool
