"""What goes into and comes out of the data plane (`ServiceState.infer`): batch arrays, not wire formats."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Upload:
    """The original bytes of an image, kept with its record when small enough."""

    data: bytes
    mime: str | None


@dataclass(frozen=True)
class RequestInfo:
    """Who asked, and when the request started: kept with each record."""

    client: str | None
    request_id: str | None
    started: float  # time.perf_counter() at request start
    deadline: float | None = None  # time.perf_counter() when the caller stops waiting (None: no deadline)


@dataclass(frozen=True)
class Inference:
    """One request's answers: row i of each array belongs to image i, and `ids[i]` names its record."""

    model: str
    version: str
    images: np.ndarray  # float32 [n, 28, 28], what the model saw
    probabilities: np.ndarray  # float32 [n, 10]
    digits: np.ndarray  # int64 [n]
    confidences: np.ndarray  # float32 [n]
    ids: list[uuid.UUID]
    latency_ms: float  # request start -> model answer

    def __len__(self) -> int:
        return len(self.ids)
