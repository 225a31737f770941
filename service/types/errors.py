"""The two error shapes: the own API's {"error": {"code", "message"}}, and TF Serving's and v2's flat one."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable name, e.g. bad_input, unknown_model, too_large")
    message: str = Field(description="What was wrong, for a person")


class Error(BaseModel):
    """The own API's error body."""

    error: ErrorDetail


class FlatError(BaseModel):
    """TF Serving's and the Open Inference Protocol's error body."""

    error: str
