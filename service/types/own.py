"""The own API's request and response bodies: POST /predict and GET /api/models.

The request models document the JSON bodies (and serve /openapi.json); the codec in service/codecs/own.py
decodes them straight into numpy, which is exact and far cheaper than validating 784 numbers one by one.
Fields marked `x-batch` get the configured batch cap (MNIST_MAX_IMAGES_PER_REQUEST) as maxItems in the spec.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

BATCH = {"x-batch": True}

Pixel = Annotated[float, Field(ge=0, le=255)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28)]
Image2D = Annotated[list[Row], Field(min_length=28, max_length=28, description="28x28 numbers")]
Cell = Annotated[list[Pixel], Field(min_length=1, max_length=1)]
Image3D = Annotated[
    list[Annotated[list[Cell], Field(min_length=28, max_length=28)]],
    Field(min_length=28, max_length=28, description="28x28x1 numbers"),
]
Flat = Annotated[list[Pixel], Field(min_length=784, max_length=784, description="784 numbers, row by row")]
OneImage = Image2D | Image3D | Flat
Batch2D = Annotated[list[Image2D], Field(min_length=1, json_schema_extra=BATCH)]
Batch3D = Annotated[list[Image3D], Field(min_length=1, json_schema_extra=BATCH)]
BatchFlat = Annotated[list[Flat], Field(min_length=1, json_schema_extra=BATCH)]
# Custom formats: an image file that holds one digit (JSON Schema cannot say "decodes and holds a digit";
# tests/schemathesis_hooks.py generates such files for these format names).
DIGIT_IMAGE = "digit-image"
DIGIT_IMAGE_BASE64 = "digit-image-base64"
Base64 = Annotated[
    str,
    Field(
        description="An image file (PNG, JPEG, ...) holding one digit, as base64 or a data: URL",
        json_schema_extra={"format": DIGIT_IMAGE_BASE64},
    ),
]
ModelName = Annotated[
    str,
    Field(description="A served model (empty: the default)", json_schema_extra={"x-models-or-empty": True}),
]


class ImageItem(BaseModel):
    """Image files as base64: one, or a list (the answer is then a list)."""

    model_config = ConfigDict(extra="forbid")
    image: Base64 | Annotated[list[Base64], Field(min_length=1, json_schema_extra=BATCH)]
    model: ModelName | None = None


class ImagesItem(BaseModel):
    """The same as `image`, under the plural name."""

    model_config = ConfigDict(extra="forbid")
    images: Base64 | Annotated[list[Base64], Field(min_length=1, json_schema_extra=BATCH)]
    model: ModelName | None = None


class PixelsItem(BaseModel):
    """Pixel values, 0..1 or 0..255 (each image scaled on its own), white ink on black, as MNIST."""

    model_config = ConfigDict(extra="forbid")
    pixels: OneImage | Batch2D | Batch3D | BatchFlat
    model: ModelName | None = None


PredictItem = ImageItem | ImagesItem | PixelsItem


class Prediction(BaseModel):
    """One image's answer; `id` names the record kept for it (GET /api/predictions/{id})."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    model: str
    version: str
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(ge=0, le=1)
    probabilities: list[float] = Field(min_length=10, max_length=10)
    latency_ms: float = Field(ge=0)
    input: list[list[float]] | None = Field(
        None, description="The 28x28 floats 0..1 the model saw (only with include_input=1)"
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    accuracy: float = Field(ge=0, le=1, description="Test-set accuracy, from the artifact's metadata")
    default: bool


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str
