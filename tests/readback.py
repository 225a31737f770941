"""Reading a fresh prediction back through the API, for tests that run the service out of process."""

from __future__ import annotations

from typing import Any

import requests

from tests.support.wait import wait_until


def read_back(base_url: str, made: dict[str, Any], timeout_s: float, poll_s: float = 0.3) -> dict[str, Any]:
    """GET /api/predictions/<id> until the write-behind queue has stored it; it must name the same digit."""
    record_id = made["id"]

    def stored() -> requests.Response | None:
        got = requests.get(f"{base_url}/api/predictions/{record_id}", timeout=10)
        return None if got.status_code == 404 else got

    got = wait_until(stored, timeout_s, f"prediction {record_id} to reach the store", interval=poll_s)
    assert got.status_code == 200, got.text
    record: dict[str, Any] = got.json()
    assert record["digit"] == made["digit"]
    return record
