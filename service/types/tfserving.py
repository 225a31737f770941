"""TensorFlow Serving's REST shapes (v1): predict request and response, model status, signature metadata."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.types.own import BATCH, Base64, Flat, Image2D, Image3D, OneImage

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class B64(BaseModel):
    """An image file as TF Serving's JSON spells binary data."""

    model_config = ConfigDict(extra="forbid")
    b64: Base64


_NAMED = {"description": "{<input name>: instance}"}
Named2D = Annotated[dict[str, Image2D], Field(min_length=1, max_length=1, json_schema_extra=_NAMED)]
Named3D = Annotated[dict[str, Image3D], Field(min_length=1, max_length=1, json_schema_extra=_NAMED)]
NamedFlat = Annotated[dict[str, Flat], Field(min_length=1, max_length=1, json_schema_extra=_NAMED)]
NamedAny = Annotated[dict[str, OneImage | B64], Field(min_length=1, max_length=1, json_schema_extra=_NAMED)]
# Numbers-only lists are one tensor, so every instance has the same layout; with an image file among them
# each instance is read on its own, and layouts may mix.
_FILE = {"$ref": "#/components/schemas/B64"}
_WITH_FILES = {
    "contains": {"anyOf": [_FILE, {"type": "object", "minProperties": 1, "additionalProperties": _FILE}]},
    **BATCH,
}
Instances = (
    Annotated[list[Image2D | Named2D], Field(min_length=1, json_schema_extra=BATCH)]
    | Annotated[list[Image3D | Named3D], Field(min_length=1, json_schema_extra=BATCH)]
    | Annotated[list[Flat | NamedFlat], Field(min_length=1, json_schema_extra=BATCH)]
    | Annotated[list[OneImage | B64 | NamedAny], Field(min_length=1, json_schema_extra=_WITH_FILES)]
)
Columnar = (
    OneImage
    | Annotated[list[Image2D], Field(min_length=1, json_schema_extra=BATCH)]
    | Annotated[list[Image3D], Field(min_length=1, json_schema_extra=BATCH)]
    | Annotated[list[Flat], Field(min_length=1, json_schema_extra=BATCH)]
)


class RowRequest(BaseModel):
    """Row format: one instance per image."""

    model_config = ConfigDict(extra="forbid")
    signature_name: str | None = None
    instances: Instances


class ColumnRequest(BaseModel):
    """Columnar format: the batch as one tensor, optionally under the input's name."""

    model_config = ConfigDict(extra="forbid")
    signature_name: str | None = None
    inputs: Columnar | Annotated[dict[str, Columnar], Field(min_length=1, max_length=1)]


class RowResponse(BaseModel):
    predictions: list[Annotated[list[float], Field(min_length=10, max_length=10)]]


class ColumnResponse(BaseModel):
    outputs: list[Annotated[list[float], Field(min_length=10, max_length=10)]]


class VersionStatus(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]


class ModelSpec(BaseModel):
    name: str
    signature_name: str
    version: str


class Metadata(BaseModel):
    model_spec: ModelSpec
    metadata: dict[str, Any] = Field(description="signature_def: the serving_default signature")


def status(rows: list[dict[str, Any]]) -> ModelStatus:
    """GetModelStatus from the registry's version status rows (loaded, unloading, refused)."""
    return ModelStatus(model_version_status=[VersionStatus(**row) for row in rows])


def metadata(name: str, version: str) -> Metadata:
    """GetModelMetadata: the signature (input image float [-1, 28, 28], output probabilities [-1, 10])."""

    def tensor(dims: list[str], tensor_name: str) -> dict[str, Any]:
        shape = {"dim": [{"size": d} for d in dims], "unknown_rank": False}
        return {"dtype": "DT_FLOAT", "tensor_shape": shape, "name": tensor_name}

    signature = {
        "inputs": {INPUT_NAME: tensor(["-1", "28", "28"], "serving_default_image:0")},
        "outputs": {OUTPUT_NAME: tensor(["-1", "10"], "StatefulPartitionedCall:0")},
        "method_name": "tensorflow/serving/predict",
    }
    return Metadata(
        model_spec=ModelSpec(name=name, signature_name="", version=version),
        metadata={"signature_def": {"signature_def": {"serving_default": signature}}},
    )
