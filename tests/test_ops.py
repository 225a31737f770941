"""Operations endpoints over HTTP: liveness, readiness detail, Prometheus metrics from every worker."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import MODEL_DIR
from tests.service_support import Digit, digits, metric, metric_samples

pytestmark = pytest.mark.integration
TIMEOUT = 30

REQUIRED_METRICS = {
    "mnist_http_requests": "counter",
    "mnist_http_request_duration_seconds": "histogram",
    "mnist_predictions": "counter",
    "mnist_prediction_confidence": "histogram",
    "mnist_batch_size": "histogram",
    "mnist_inference_duration_seconds": "histogram",
    "mnist_store_write_duration_seconds": "histogram",
    # mnist_store_errors_total{backend,operation} appears with its first error (labelled series).
    "mnist_write_queue_depth": "gauge",
    "mnist_write_queue_overflow": "counter",
    "mnist_model_info": "gauge",
}


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 20, start=500)


def test_healthz_says_the_process_is_alive(server) -> None:
    r = requests.get(f"{server.url}/healthz", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_details_models_store_and_queue(server) -> None:
    r = requests.get(f"{server.url}/readyz", timeout=TIMEOUT)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["models"]["ok"] and body["models"]["default"] == "cnn"
    assert {m["name"] for m in body["models"]["served"]} == {"cnn", "softmax"}
    assert body["store"]["ok"] and body["store"]["backend"] == "sqlite"
    assert body["write_queue"]["depth"] >= 0


def test_metrics_are_prometheus_text_with_the_documented_names(server, sample: list[Digit]) -> None:
    requests.post(f"{server.url}/predict", json={"pixels": sample[0].unit}, timeout=TIMEOUT)
    r = requests.get(f"{server.url}/metrics", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(r.text)}
    for name, kind in REQUIRED_METRICS.items():
        assert families.get(name) == kind, (name, families.get(name))


def test_model_info_carries_version_and_accuracy_from_metadata(server) -> None:
    samples = metric_samples(server.url)
    info = {
        dict(labels)["model"]: dict(labels)
        for (name, labels), v in samples.items()
        if name == "mnist_model_info"
    }
    for meta_path in MODEL_DIR.glob("*/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        if meta["name"] in info and info[meta["name"]]["version"] == meta["version"]:
            assert float(info[meta["name"]]["accuracy"]) == pytest.approx(meta["test_accuracy"], abs=1e-4)
    assert set(info) == {"cnn", "softmax"}


def test_counts_from_both_workers_are_summed(server_factory, sample: list[Digit]) -> None:
    server = server_factory(workers=2)
    before = metric_samples(server.url)

    def post(d: Digit) -> dict:
        return dict(requests.post(f"{server.url}/predict", json={"pixels": d.unit}, timeout=TIMEOUT).json())

    # New connections each time, so gunicorn spreads them over both workers.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, sample * 5))
    after = metric_samples(server.url)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    sent = len(answers)
    assert grew("mnist_http_requests_total", endpoint="/predict", method="POST", status="200") == sent
    assert grew("mnist_predictions_total", model="cnn") == sent
    for digit in range(10):
        expected = sum(a["digit"] == digit for a in answers)
        assert grew("mnist_predictions_total", model="cnn", digit=str(digit)) == expected
    assert grew("mnist_prediction_confidence_count", model="cnn") == sent
    assert grew("mnist_http_request_duration_seconds_count", endpoint="/predict") == sent
    pids = {
        dict(labels).get("pid") for (name, labels) in after if name == "mnist_process_resident_memory_bytes"
    }
    assert len(pids) == 2, "both workers report"


def test_cors_allows_only_the_configured_origins(server_factory, sample: list[Digit]) -> None:
    server = server_factory({"MNIST_CORS_ORIGINS": "http://draw.example, http://other.example"}, workers=1)
    preflight = requests.options(
        f"{server.url}/predict",
        headers={"Origin": "http://draw.example", "Access-Control-Request-Method": "POST"},
        timeout=TIMEOUT,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://draw.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = requests.post(
        f"{server.url}/predict",
        json={"pixels": sample[0].unit},
        headers={"Origin": "http://other.example"},
        timeout=TIMEOUT,
    )
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://other.example"
    stranger = requests.get(
        f"{server.url}/api/models", headers={"Origin": "http://evil.example"}, timeout=TIMEOUT
    )
    assert "Access-Control-Allow-Origin" not in stranger.headers
