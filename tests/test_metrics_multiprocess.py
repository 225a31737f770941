"""/metrics of a real gunicorn server with several workers: every worker's counts, summed exactly once."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.data import load_mnist

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RSS = "mnist_process_resident_memory_bytes"


@pytest.fixture(scope="module")
def digits(mnist_data_dir: Path) -> list[tuple[bytes, int]]:
    """A few MNIST test digits as PNG files, with their labels."""
    mnist = load_mnist(mnist_data_dir)
    out = []
    for i in range(20):
        buf = io.BytesIO()
        Image.fromarray(mnist.test_images[i], mode="L").save(buf, format="PNG")
        out.append((buf.getvalue(), int(mnist.test_labels[i])))
    return out


def scrape(url: str) -> list[Sample]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def worker_pids(server_pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        children |= {int(p) for p in (task / "children").read_text().split()}
    return children


def per_worker_predictions(server: Any) -> dict[int, float]:
    """mnist_predictions_total as each worker wrote it to its own counter_<pid>.db file."""
    shares = {}
    for path in Path(server.env["PROMETHEUS_MULTIPROC_DIR"]).glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(path)], accumulate=False)
        shares[int(path.stem.split("_")[1])] = sum(
            s.value for f in families for s in f.samples if s.name == "mnist_predictions_total"
        )
    return shares


def predict(url: str, png: bytes, model: str) -> dict[str, Any]:
    # A new connection per request, so the kernel spreads them over the workers' accept() calls.
    response = requests.post(
        f"{url}/predict",
        params={"model": model},
        files={"image": ("digit.png", png, "image/png")},
        headers={"Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_counts_from_every_worker_are_summed_exactly(
    server_factory: Callable[..., Any], digits: list[tuple[bytes, int]]
) -> None:
    server = server_factory({}, workers=3)
    pids = worker_pids(server.proc.pid)
    assert len(pids) == 3
    before = scrape(server.url)
    assert total(before, "mnist_predictions_total") == 0

    sent: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Rounds of concurrent requests until two workers have predicted (nearly always in the first round).
        for _ in range(10):
            jobs = [(png, model) for png, _ in digits for model in ("cnn", "softmax")]
            sent += pool.map(lambda job: predict(server.url, *job), jobs)
            if len([c for c in per_worker_predictions(server).values() if c]) >= 2:
                break
    after = scrape(server.url)
    n = len(sent)

    # Each worker counted its own share in its own file; /metrics is the exact sum of the shares.
    shares = per_worker_predictions(server)
    busy = {pid for pid, count in shares.items() if count}
    assert len(busy) >= 2, f"only workers {busy} of {pids} answered the {n} requests"
    assert busy <= pids
    assert sum(shares.values()) == n
    assert total(after, "mnist_predictions_total") == n

    n_cnn = sum(1 for r in sent if r["model"] == "cnn")
    assert total(after, "mnist_http_requests_total", method="POST", status="200") == n
    assert total(after, "mnist_predictions_total", model="cnn") == n_cnn
    for digit in {r["digit"] for r in sent}:
        expected = sum(1 for r in sent if r["digit"] == digit)
        assert total(after, "mnist_predictions_total", digit=str(digit)) == expected
    assert total(after, "mnist_prediction_confidence_count") == n
    confidence = sum(r["confidence"] for r in sent)  # rounded to 6 decimals in the answers
    assert total(after, "mnist_prediction_confidence_sum") == pytest.approx(confidence, abs=1e-6 * n)
    # Every image went through a model call: the batches add up to the images.
    assert total(after, "mnist_batch_size_sum") == n
    assert total(after, "mnist_http_request_duration_seconds_count", endpoint="/predict") == n

    # Live gauges keep one memory sample per worker (label pid); every busy worker reports a real size.
    rss = {int(s.labels["pid"]): s.value for s in after if s.name == RSS}
    assert set(rss) <= pids
    assert all(rss[pid] > 20 * 2**20 for pid in busy)
    # Model info is the same in every worker and shown once per model version.
    info = [s for s in after if s.name == "mnist_model_info"]
    assert sorted(s.labels["model"] for s in info) == ["cnn", "softmax"]
    assert all(0.0 < float(s.labels["accuracy"]) <= 1.0 and s.value == 1 for s in info)
