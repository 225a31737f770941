"""The v2 model repository extension's shapes: index, load and unload requests and answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from service.types.tfserving import VersionStatus

Version = Annotated[str, Field(pattern=r"^[0-9]+$", description="A version on disk (an integer)")]


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: bool | None = Field(None, description="true: only the versions serving now")


class IndexEntry(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = Field(
        description="Why a version is UNAVAILABLE (refused by a check, unloaded, not selected)"
    )


class Index(RootModel[list[IndexEntry]]):
    """Every model version on disk."""


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    versions: list[Version] | None = Field(
        None, min_length=1, description="Pin the model to these versions; absent: back to its version policy"
    )


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: LoadParameters | None = None


class LoadAnswer(BaseModel):
    name: str
    model_version_status: list[VersionStatus] = Field(description="This worker's versions of the model now")


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, str] | None = None


class UnloadAnswer(BaseModel):
    name: str
    unloaded: bool
