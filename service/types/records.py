"""The history API's shapes: a record, a page of records, feedback in and out, and the query strings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# `before`: a time (date, optional time of day, optional offset; no offset means UTC), optionally followed by
# ",<record id>" (the `next_before` cursor). The spec states this pattern (service/openapi.py) and the code
# checks it before reading the fields; a day past the month's end rolls over (Feb 30 is Mar 1 or 2).
_HEX = "[0-9a-fA-F]"
CURSOR = (
    r"^(?P<y>[12]\d{3})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12]\d|3[01])"
    r"(?:[Tt ](?P<H>[01]\d|2[0-3]):(?P<M>[0-5]\d)(?::(?P<S>[0-5]\d)(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?)?"
    rf"(?:,(?P<id>{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}))?$"
)


class RecordSummary(BaseModel):
    """One recorded prediction, as listed."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    created: str = Field(json_schema_extra={"format": "date-time"})
    model: str
    version: str
    digit: int = Field(ge=0, le=9)
    confidence: float = Field(ge=0, le=1)
    probabilities: list[float] = Field(min_length=10, max_length=10)
    latency_ms: float = Field(ge=0)
    label: int | None = Field(ge=0, le=9, description="The true digit, once feedback gave it")
    pixels: list[list[float]] = Field(description="The normalized 28x28 input, floats 0..1")
    image_url: str | None = Field(description="Where the original upload is, when it was kept")


class Record(RecordSummary):
    """One record in detail: also who asked and the original upload (base64)."""

    client: str | None
    request_id: str | None
    image: str | None = Field(description="The original upload, base64 (kept up to MNIST_KEEP_IMAGE_BYTES)")
    image_type: str | None
    extra: dict[str, Any]


class Page(BaseModel):
    predictions: list[RecordSummary]
    next_before: str | None = Field(description="Cursor for the next (older) page; null on the last page")


class Feedback(BaseModel):
    """POST /api/predictions/{id}/feedback: the true digit."""

    model_config = ConfigDict(extra="allow")
    label: int = Field(ge=0, le=9, description="The true digit, 0..9")


class FeedbackAnswer(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    label: int = Field(ge=0, le=9)
    digit: int = Field(ge=0, le=9)
    agree: bool
