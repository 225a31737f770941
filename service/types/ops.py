"""Operations answers: liveness and the readiness detail."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class ModelsHealth(BaseModel):
    ok: bool
    default: str
    served: list[dict[str, Any]]


class QueueHealth(BaseModel):
    depth: int = Field(ge=0)
    capacity: int = Field(ge=1)


class Readiness(BaseModel):
    status: str = Field(description="ready or not ready")
    models: ModelsHealth
    store: dict[str, Any] = Field(description="backend, ok and the backend's own detail")
    write_queue: QueueHealth
    uptime_s: float
