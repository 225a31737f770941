"""Open Inference Protocol v2 (REST) shapes: inference request/response, server and model metadata, health."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.types.ops import LoadFailure

INPUT_NAME = "image"
OUTPUTS = ("probabilities", "digit")
InputDatatype = Literal["FP32", "FP64", "FP16", "UINT8", "INT64"]
# The batch dimension; its maximum is the batch cap (MNIST_MAX_IMAGES_PER_REQUEST), set by service/openapi.py.
BatchDim = Annotated[int, Field(ge=1, json_schema_extra={"x-batch-dim": True})]
Value = Annotated[float, Field(ge=0, le=255)]


class InputParameters(BaseModel):
    binary_data_size: int | None = Field(
        None, ge=0, description="Bytes of this tensor in the binary part (Inference-Header-Content-Length)"
    )


class InputTensor(BaseModel):
    """The one input: N images as [N, 784], [N, 28, 28] or [N, 28, 28, 1]; UINT8/INT64 0..255, floats 0..1
    or 0..255. `data` holds exactly prod(shape) numbers, or `binary_data_size` names the binary part
    (FP16 only comes that way).
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
    classification: int | None = Field(
        None, ge=0, description="classification extension: the top k classes (probabilities only)"
    )
    class_count: int | None = Field(None, ge=0, description="alias of classification")


class RequestedOutput(BaseModel):
    name: Literal["probabilities", "digit"]
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    """Known parameters are checked; others are ignored, as the protocol leaves them to the server."""

    model_config = ConfigDict(extra="allow")
    binary_data_output: bool | None = None
    timeout: int | None = Field(
        None,
        ge=0,
        description="Microseconds from the request's start; past it the request is dropped, unrun, and "
        "answered 504 (0: no deadline)",
    )
    priority: int | None = Field(None, ge=0, description="Accepted; every priority is served alike")


class InferRequest(BaseModel):
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str = Field(description="probabilities or digit")
    datatype: str = Field(description="FP32 (probabilities), INT64 (digit), BYTES (classification)")
    shape: list[int]
    data: list[float | int | str] | None = None
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


class ConfigTensor(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    data_type: str
    dims: list[int]


class DynamicBatching(BaseModel):
    preferred_batch_size: list[int]
    max_queue_delay_microseconds: int


class ModelConfig(BaseModel):
    """Triton's model configuration (model_config.proto as JSON), the model_configuration extension."""

    model_config = ConfigDict(extra="allow")
    name: str
    platform: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: DynamicBatching


class StatisticDuration(BaseModel):
    count: int
    ns: int


class InferStatistics(BaseModel):
    success: StatisticDuration
    fail: StatisticDuration
    queue: StatisticDuration
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration


class ModelStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="Milliseconds since the epoch (0 = never)")
    inference_count: int = Field(description="Images inferred")
    execution_count: int = Field(description="Model calls (micro-batches)")
    inference_stats: InferStatistics
    batch_stats: list[dict[str, object]]


class StatisticsResponse(BaseModel):
    """The statistics extension, summed over every worker."""

    model_stats: list[ModelStatistics]
