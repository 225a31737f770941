"""A fixed-rate load generator, run as its own process so the test process does not compete with it.

    python -m tests.loadgen URL BODIES_FILE OUT_FILE --rate 100 --seconds 20

POSTs the JSON bodies of BODIES_FILE (one per line, in turn) to URL at a fixed rate (open loop: a slow
answer does not delay the next request), then writes every outcome to OUT_FILE as JSON:
{"sent": n, "results": [{"status": 200, "id": "...", "ids": ["..."], "ms": 3.1, "late_ms": 0.2,
"retry_after": null, "error": null}, ...]}: `ids` holds every record id of a list answer (own API, several
images), `late_ms` how far behind its schedule the request was sent (the generator's own lag), and
`retry_after` the Retry-After header of a 503. `--connections` bounds the requests in flight.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

_local = threading.local()


def post(url: str, body: bytes, timeout: float, due: float) -> dict[str, Any]:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    started = time.perf_counter()
    late_ms = round((time.monotonic() - due) * 1000, 3)
    try:
        response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": None, "id": None, "ids": [], "ms": None, "late_ms": late_ms,
                "retry_after": None, "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    ms = (time.perf_counter() - started) * 1000
    try:
        answer = response.json() if response.ok else None
    except ValueError:
        answer = None
    items = answer if isinstance(answer, list) else [answer] if isinstance(answer, dict) else []
    ids = [item.get("id") for item in items if isinstance(item, dict) and item.get("id")]
    record_id = ids[0] if ids else None
    error = None if response.ok and record_id else response.text[:300]
    retry_after = response.headers.get("Retry-After")
    return {"status": response.status_code, "id": record_id, "ids": ids, "ms": round(ms, 3),
            "late_ms": late_ms, "retry_after": retry_after, "error": error}  # fmt: skip


def run(
    url: str, bodies: list[bytes], rate: float, seconds: float, timeout: float, connections: int = 32
) -> dict[str, Any]:
    total = int(rate * seconds)
    futures = []
    with ThreadPoolExecutor(max_workers=connections) as pool:
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post, url, bodies[i % len(bodies)], timeout, due))
        results = [f.result() for f in futures]
    return {"sent": total, "seconds": round(time.monotonic() - start, 3), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight at most")
    args = parser.parse_args()
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]
    summary = run(args.url, bodies, args.rate, args.seconds, args.timeout, args.connections)
    args.out.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
