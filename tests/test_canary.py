"""Canary weights over real HTTP: requests that name no version split between loaded versions by weight,
and each answer names the version that gave it."""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.service_support import digits
from tests.support.model_versions import add_version, model_dir_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REQUESTS = 2000


def test_a_90_10_split_over_2000_requests_lands_within_3_points(
    server_factory, tmp_path: Path, mnist_data_dir: Path
) -> None:
    model_dir = model_dir_with(tmp_path, cnn=1, softmax=1)
    add_version(model_dir, "cnn", 2)
    server = server_factory(
        {
            "MNIST_MODEL_DIR": str(model_dir),
            "MNIST_MODEL_VERSION_POLICY": "cnn=all",
            "MNIST_MODEL_ROUTING": "cnn: 1=90, 2=10",
            "MNIST_ROUTING_SEED": "13",
        },
        workers=2,
    )
    pngs = [d.png for d in digits(mnist_data_dir, 20)]
    local = threading.local()

    def ask(i: int) -> str:
        session = local.__dict__.setdefault("session", requests.Session())
        r = session.post(f"{server.url}/predict", files={"image": ("d.png", pngs[i % len(pngs)])}, timeout=30)
        assert r.status_code == 200, r.text
        return str(r.json()["version"])

    with ThreadPoolExecutor(8) as pool:
        versions = collections.Counter(pool.map(ask, range(REQUESTS)))
    assert sum(versions.values()) == REQUESTS and set(versions) == {"1", "2"}
    share = versions["2"] / REQUESTS
    print(f"\ncanary 90/10 over {REQUESTS} requests: v1 {versions['1']}, v2 {versions['2']} ({share:.1%})")
    assert abs(share - 0.10) <= 0.03, versions
    # Both versions are addressable by number while the split runs.
    for version in ("1", "2"):
        status = requests.get(f"{server.url}/v1/models/cnn/versions/{version}", timeout=30)
        assert status.status_code == 200, status.text
        assert status.json()["model_version_status"][0]["version"] == version
