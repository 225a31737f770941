"""Admission control: a worker takes at most MNIST_MAX_INFLIGHT inference requests at once and sheds the rest.

Overload must not turn into a queue: once a worker holds as many requests as it can answer promptly, one more
only waits behind them, and so does every request after it. `Admission.admit` wraps a request from before its
input is decoded until the model has answered (HTTP and gRPC alike); over the bound it raises `Overloaded` at
once, before any decoding, so a shed request costs almost nothing and its client can retry elsewhere
(503 + Retry-After, gRPC UNAVAILABLE). The count is per worker process, the unit that shares one model
interpreter and one GIL. Why a bound on requests and not on an expected wait: see docs/operations.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service import metrics
from service.errors import Overloaded

REASON = "inflight_limit"


class Admission:
    """The worker's count of inference requests in the data plane, and the bound on it (0 = none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, model: str, api: str) -> Iterator[None]:
        """Hold one of the worker's places while the body runs; `Overloaded` (counted) when none is free."""
        with self._lock:
            full = 0 < self.limit <= self.inflight
            if not full:
                self.inflight += 1
        if full:
            metrics.observe_shed(model, api, REASON)
            raise Overloaded(
                f"this worker is answering {self.limit} inference requests already (MNIST_MAX_INFLIGHT); "
                f"retry in {Overloaded.retry_after_s} s"
            )
        try:
            yield
        finally:
            with self._lock:
                self.inflight -= 1
