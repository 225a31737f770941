"""Steady, bounded load for lifecycle tests: a few client threads posting digits to /predict in a loop,
keeping every answer's timing, status and the version that answered."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

from tests.service_support import Digit


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int | None
    version: str | None
    error: str | None


@dataclass
class SteadyLoad:
    """`clients` threads, each at most `max_requests` requests and `max_seconds` seconds, until `stop()`."""

    url: str
    sample: list[Digit]
    clients: int = 4
    max_requests: int = 5_000
    max_seconds: float = 180.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)
        ]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.answers

    def _client(self, n: int) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            digit = self.sample[(n * 7 + i) % len(self.sample)]
            started = time.monotonic()
            try:
                r = session.post(f"{self.url}/predict", files={"image": ("d.png", digit.png)}, timeout=30)
                body = r.json() if r.ok else None
                answer = Answer(started, time.monotonic(), r.status_code, body and body.get("version"),
                                None if r.ok else r.text[:300])  # fmt: skip
            except requests.RequestException as exc:
                answer = Answer(started, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.answers.append(answer)

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]
