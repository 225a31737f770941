"""Operations answers: liveness and the readiness detail."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class LoadFailure(BaseModel):
    """A model version refused by a check (service/lifecycle/checks.py); it serves once its files change."""

    model: str
    version: str
    reason: str = Field(description="rejected, metadata, checksum, accuracy, load or warmup")
    message: str
    at: str = Field(description="ISO time of the attempt")


class ModelsHealth(BaseModel):
    ok: bool
    default: str
    served: list[dict[str, Any]]
    failures: list[LoadFailure] = Field(
        default_factory=list, description="Versions refused by a check (they do not make the worker unready)"
    )


class QueueHealth(BaseModel):
    depth: int = Field(ge=0)
    capacity: int = Field(ge=1)


class Readiness(BaseModel):
    status: str = Field(description="ready or not ready")
    models: ModelsHealth
    store: dict[str, Any] = Field(description="backend, ok and the backend's own detail")
    write_queue: QueueHealth
    uptime_s: float
