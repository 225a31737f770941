"""Reading a fresh prediction back through the API, for tests that run the service out of process."""

from __future__ import annotations

import time
from typing import Any

import requests


def read_back(base_url: str, made: dict[str, Any], timeout_s: float, poll_s: float = 0.3) -> dict[str, Any]:
    """GET /api/predictions/<id> until the write-behind queue has stored it; it must name the same digit."""
    record_id = made["id"]
    deadline = time.monotonic() + timeout_s
    while (got := requests.get(f"{base_url}/api/predictions/{record_id}", timeout=10)).status_code == 404:
        assert time.monotonic() < deadline, f"prediction {record_id} never reached the store"
        time.sleep(poll_s)
    assert got.status_code == 200, got.text
    record: dict[str, Any] = got.json()
    assert record["digit"] == made["digit"]
    return record
