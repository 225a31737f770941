"""A bounded, steady load of predictions while the cluster changes under it (rolling upgrade, pod loss).

Open loop at a fixed rate from a few threads; every request carries its own X-Request-ID, which the service
stores with the record, so afterwards each answered request can be found in Cassandra exactly once. The only
retry is of a connection that could not be opened (refused, or no answer to the TCP handshake): such a request
never reached any server, so repeating it cannot duplicate a record. Everything else counts as a failure.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tests.e2e.digits import drawn_digits

MAX_SECONDS = 600  # no load runs longer, whatever the caller asks
CONNECT_RETRIES = 5


@dataclass
class Outcome:
    request_id: str
    status: int | None
    record_id: str | None
    error: str | None
    sent_at: float


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200 and o.record_id]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not (o.status == 200 and o.record_id)]

    def summary(self) -> str:
        failures = "; ".join(f"{o.status} {o.error}" for o in self.failed[:5])
        sent = f"{len(self.outcomes)} sent in {self.seconds:.0f}s, {len(self.failed)} failed"
        return f"{sent}: {failures}" if failures else sent


def _session() -> requests.Session:
    session = requests.Session()
    retry = Retry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=0, status=0, other=0, redirect=0,
                  backoff_factor=0.2, allowed_methods=None, raise_on_status=False)  # fmt: skip
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=4))
    return session


class SteadyLoad:
    """POSTs PNG digits to base_url/predict at `rate` per second until stopped (at most MAX_SECONDS)."""

    def __init__(self, base_url: str, rate: float = 50.0, threads: int = 16, timeout: float = 30.0) -> None:
        self.url = f"{base_url}/predict"
        self.rate, self.timeout = rate, timeout
        self.bodies = drawn_digits()
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.local = threading.local()
        self.stop_event = threading.Event()
        self.futures: list[Future[Outcome]] = []
        self.result = LoadResult()

    def _post(self, index: int) -> Outcome:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = _session()
        request_id = f"e2e-{uuid.uuid4().hex}"
        sent_at = time.monotonic()
        try:
            response = session.post(
                self.url, data=self.bodies[index % len(self.bodies)], timeout=self.timeout,
                headers={"Content-Type": "image/png", "X-Request-ID": request_id},
            )  # fmt: skip
        except requests.RequestException as exc:
            return Outcome(request_id, None, None, f"{type(exc).__name__}: {exc}", sent_at)
        record_id = response.json().get("id") if response.status_code == 200 else None
        error = None if record_id else response.text[:200]
        return Outcome(request_id, response.status_code, record_id, error, sent_at)

    def _run(self) -> None:
        start = time.monotonic()
        index = 0
        while not self.stop_event.is_set() and time.monotonic() - start < MAX_SECONDS:
            delay = start + index / self.rate - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
                continue
            self.futures.append(self.pool.submit(self._post, index))
            index += 1
        self.result.seconds = time.monotonic() - start

    @contextmanager
    def running(self) -> Iterator[LoadResult]:
        """Load while the with-block runs; the result is complete once the block has left."""
        driver = threading.Thread(target=self._run, name="steady-load", daemon=True)
        driver.start()
        try:
            yield self.result
        finally:
            self.stop_event.set()
            driver.join(timeout=30)
            self.result.outcomes = [future.result() for future in self.futures]
            self.pool.shutdown(wait=True)
