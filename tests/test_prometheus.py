"""Prometheus for real: Debian's prometheus binary scrapes the multi-worker gunicorn server on loopback;
after a known amount of traffic its HTTP API (PromQL) must count exactly what was sent, and every dashboard
query must evaluate on the scraped data. The query results are also drawn as a picture of the dashboard.

The server runs a canary and a shadow (cnn v1 and v2, 75/25, v2 shadowing v1; v2 answers with the softmax
network, so the two disagree now and then) and takes gRPC calls too, so the per-version, shadow and gRPC
panels have data."""

from __future__ import annotations

import math
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import yaml

from service.data import load_mnist
from service.lifecycle.shadow import shadow_id
from tests import dashboard
from tests.conftest import free_port, require_binary
from tests.service_support import png_bytes
from tests.support.model_versions import add_version, answers_like, model_dir_with
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 3
SCRAPE_INTERVAL_S = 1
JOB = "mnist"
WAIT_S = 60
PRIMARY, SHADOW = "1", "2"  # cnn's versions: v1 takes 3/4 of the traffic, v2 1/4 and a copy of v1's


@dataclass
class Prometheus:
    """A running Prometheus server and its HTTP API."""

    url: str
    proc: subprocess.Popen
    log: Path

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        body = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": promql, "start": start, "end": end, "step": step}
        body = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=30).json()
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def by(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        """An instant vector as {label values: value}."""
        return {
            tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in self.query(promql)
        }


def start_prometheus(binary: str, target: str, folder: Path) -> Prometheus:
    """Debian's prometheus on a free loopback port, scraping `target` (host:port) every second."""
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _until(lambda: _ready(url), f"Prometheus at {url} ready", proc, log)
    return Prometheus(url, proc, log)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _until(check: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path, timeout: float = WAIT_S):
    def alive_and(check_now: Callable[[], bool]) -> bool:
        if proc.poll() is not None:
            pytest.fail(
                f"prometheus exited ({proc.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        return check_now()

    try:
        wait_until(lambda: alive_and(check), timeout, what, interval=0.2)
    except AssertionError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def scraped(server_factory, tmp_path: Path) -> Iterator[tuple[object, Prometheus]]:
    """A server with several gunicorn workers, and a Prometheus that has scraped it at least once."""
    binary = require_binary("prometheus", "apt-get install prometheus (scripts/install-system-deps.sh)")
    model_dir = model_dir_with(tmp_path, cnn=1, softmax=1)
    add_version(model_dir, "cnn", 2, damage=answers_like("softmax"))
    env = {
        "MNIST_MODEL_DIR": str(model_dir),
        "MNIST_MODEL_VERSION_POLICY": "cnn=latest:2; softmax=latest",
        "MNIST_MODEL_ROUTING": f"cnn: {PRIMARY}=3, {SHADOW}=1",
        "MNIST_MODEL_SHADOW": f"cnn: {SHADOW}",
        "MNIST_ROUTING_SEED": "7",
    }
    server = server_factory(env, workers=WORKERS)
    prom = start_prometheus(binary, server.url.split("://", 1)[1], tmp_path)
    try:
        _until(
            lambda: [r["value"][1] for r in prom.query(f'up{{job="{JOB}"}}')] == ["1"],
            "the first successful scrape",
            prom.proc,
            prom.log,
        )
        yield server, prom
    finally:
        prom.proc.terminate()
        try:
            prom.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.proc.kill()


@dataclass
class Sent:
    """What the test sent and what the service answered: the expected counter values."""

    predictions: Counter  # (model, version, digit) -> count
    confidence_sum: Counter  # model -> sum of confidences
    requests: Counter  # (endpoint, status) -> count
    feedback: Counter  # (model, version, agreement) -> count
    shadowed: list = field(default_factory=list)  # (primary id, primary digit, label or None) of cnn v1
    grpc_calls: int = 0


def send_traffic(
    url: str, grpc_target: str, mnist_data_dir: Path, models: list[str], rounds: int = 6
) -> Sent:
    """Rounds of real MNIST test digits: PNG uploads and JSON pixel batches to every model, blank uploads
    (400), feedback and a gRPC call, spread over a few seconds so rates and quantiles have something to
    show."""
    data = load_mnist(mnist_data_dir)
    sent = Sent(Counter(), Counter(), Counter(), Counter())
    grpc_images = data.test_images[-rounds:].astype(np.float32) / 255
    index = 0
    for round_no in range(rounds):
        send_grpc(grpc_target, grpc_images[round_no], sent)
        for model in models:
            answers = []
            for _ in range(3):  # single uploads
                files = {"image": ("digit.png", png_bytes(data.test_images[index]), "image/png")}
                r = requests.post(f"{url}/predict", files=files, data={"model": model}, timeout=30)
                assert r.status_code == 200, r.text
                answers.append((r.json(), int(data.test_labels[index])))
                sent.requests[("/predict", "200")] += 1
                index += 1
            batch = data.test_images[index : index + 4]
            labels = data.test_labels[index : index + 4]
            index += 4
            pixels = (batch / 255.0).round(4).tolist()
            r = requests.post(f"{url}/predict", json={"pixels": pixels, "model": model}, timeout=30)
            assert r.status_code == 200, r.text
            sent.requests[("/predict", "200")] += 1
            answers += list(zip(r.json(), (int(x) for x in labels), strict=True))
            for answer, _ in answers:
                sent.predictions[(answer["model"], answer["version"], str(answer["digit"]))] += 1
                sent.confidence_sum[answer["model"]] += answer["confidence"]
            # Feedback on two answers: the true label, and a deliberately wrong one.
            (first, truth), (second, other_truth) = answers[0], answers[1]
            labels_given = {first["id"]: truth, second["id"]: (other_truth + 1) % 10}
            for answer in (first, second):
                given = labels_given[answer["id"]]
                feedback_url = f"{url}/api/predictions/{answer['id']}/feedback"
                r = requests.post(feedback_url, json={"label": given}, timeout=10)
                assert r.status_code == 200, r.text
                agreement = "agree" if given == answer["digit"] else "disagree"
                sent.feedback[(answer["model"], answer["version"], agreement)] += 1
                sent.requests[("/api/predictions/<record_id>/feedback", "200")] += 1
            for answer, _ in answers:
                if answer["model"] == "cnn" and answer["version"] == PRIMARY:
                    sent.shadowed.append((answer["id"], answer["digit"], labels_given.get(answer["id"])))
        if round_no % 2 == 0:
            blank = {"image": ("blank.png", png_bytes(np.zeros((28, 28), dtype=np.uint8)), "image/png")}
            r = requests.post(f"{url}/predict", files=blank, timeout=10)
            assert r.status_code == 400, r.text
            sent.requests[("/predict", "400")] += 1
        time.sleep(1.5)
    return sent


def send_grpc(target: str, image: np.ndarray, sent: Sent) -> None:
    """One ModelInfer call of a softmax digit over gRPC, counted into `sent` like the HTTP ones."""
    client = grpcclient.InferenceServerClient(url=target)
    try:
        inp = grpcclient.InferInput("image", [1, 28, 28], "FP32")
        inp.set_data_from_numpy(image[np.newaxis])
        result = client.infer("softmax", [inp], client_timeout=30)
    finally:
        client.close()
    probabilities = result.as_numpy("probabilities")[0]
    version = result.get_response().model_version
    sent.predictions[("softmax", version, str(int(probabilities.argmax())))] += 1
    sent.confidence_sum["softmax"] += float(probabilities.max())
    sent.grpc_calls += 1


def shadow_expectations(url: str, sent: Sent) -> tuple[Counter, Counter]:
    """What the shadow counters must say, from the shadow records themselves: agreement with the primary
    per (model, primary, shadow version, agreement), and of the labels with the shadow's digits."""
    agreement: Counter = Counter()
    feedback: Counter = Counter()
    for primary_id, primary_digit, label in sent.shadowed:
        record_url = f"{url}/api/predictions/{shadow_id(uuid.UUID(primary_id), SHADOW)}"
        record = wait_until(
            lambda u=record_url: (r := requests.get(u, timeout=10)).ok and r.json(),
            WAIT_S,
            f"the shadow record of {primary_id}",
        )
        assert record["version"] == SHADOW and record["extra"]["shadow"] is True
        agreement[("cnn", PRIMARY, SHADOW, "agree" if record["digit"] == primary_digit else "disagree")] += 1
        if label is not None:
            feedback[("cnn", SHADOW, "agree" if record["digit"] == label else "disagree")] += 1
    return agreement, feedback


def _delta(after: dict, before: dict) -> dict:
    return {k: round(v - before.get(k, 0.0), 6) for k, v in after.items() if round(v - before.get(k, 0.0), 6)}


def test_prometheus_counts_exactly_what_was_sent(scraped, mnist_data_dir: Path, output_dir: Path) -> None:
    server, prom = scraped
    models = [m["name"] for m in requests.get(f"{server.url}/api/models", timeout=10).json()["models"]]
    sel = f'job="{JOB}"'
    queries = {
        "predictions": (
            f"sum by (model, version, digit) (mnist_predictions_total{{{sel}}})",
            ("model", "version", "digit"),
        ),
        "confidence_count": (f"sum by (model) (mnist_prediction_confidence_count{{{sel}}})", ("model",)),
        "confidence_inf": (
            f'sum by (model) (mnist_prediction_confidence_bucket{{{sel}, le="+Inf"}})',
            ("model",),
        ),
        "confidence_sum": (f"sum by (model) (mnist_prediction_confidence_sum{{{sel}}})", ("model",)),
        "batched_images": (f"sum by (model) (mnist_batch_size_sum{{{sel}}})", ("model",)),
        "requests": (
            f"sum by (endpoint, status) (mnist_http_requests_total{{{sel}}})",
            ("endpoint", "status"),
        ),
        "durations": (
            f"sum by (endpoint) (mnist_http_request_duration_seconds_count{{{sel}}})",
            ("endpoint",),
        ),
        "feedback": (
            f"sum by (model, version, agreement) (mnist_feedback_total{{{sel}}})",
            ("model", "version", "agreement"),
        ),
        "shadow": (
            "sum by (model, primary_version, shadow_version, agreement) "
            f"(mnist_shadow_predictions_total{{{sel}}})",
            ("model", "primary_version", "shadow_version", "agreement"),
        ),
        "shadow_feedback": (
            f"sum by (model, shadow_version, agreement) (mnist_shadow_feedback_total{{{sel}}})",
            ("model", "shadow_version", "agreement"),
        ),
        "grpc": (f"sum by (rpc, code) (mnist_grpc_requests_total{{{sel}}})", ("rpc", "code")),
    }
    before = {name: prom.by(q, *labels) for name, (q, labels) in queries.items()}
    started = time.time()
    sent = send_traffic(server.url, server.grpc_target, mnist_data_dir, models)
    shadow_agreement, shadow_feedback = shadow_expectations(server.url, sent)

    per_model = Counter()
    for (model, _, _), n in sent.predictions.items():
        per_model[(model,)] += n
    predict_requests = Counter()
    for (endpoint, _), n in sent.requests.items():
        predict_requests[(endpoint,)] += n
    expected = {
        "predictions": dict(sent.predictions),
        "confidence_count": dict(per_model),
        "confidence_inf": dict(per_model),
        # Every image goes through exactly one model call (a shadowed one also through the shadow's), so the
        # batch sizes add up to the images.
        "batched_images": {**per_model, ("cnn",): per_model[("cnn",)] + len(sent.shadowed)},
        "requests": dict(sent.requests),
        "feedback": dict(sent.feedback),
        "shadow": dict(shadow_agreement),
        "shadow_feedback": dict(shadow_feedback),
        "grpc": {("ModelInfer", "OK"): sent.grpc_calls},
    }
    assert sum(sent.feedback.values()) and any(k[2] == "disagree" for k in sent.feedback)
    assert {k[1] for k in sent.predictions if k[0] == "cnn"} == {PRIMARY, SHADOW}, "the canary split both"
    assert shadow_agreement and shadow_feedback

    def observed() -> dict[str, dict]:
        got = {name: _delta(prom.by(q, *labels), before[name]) for name, (q, labels) in queries.items()}
        # Only what the test sent is compared: the fixture's own health checks hit other endpoints.
        got["requests"] = {k: v for k, v in got["requests"].items() if k in sent.requests}
        got["durations"] = {k: v for k, v in got["durations"].items() if k in predict_requests}
        return got

    def matches(got: dict) -> bool:
        return all(
            {tuple(k): int(v) for k, v in got[name].items()} == {tuple(k): v for k, v in want.items()}
            for name, want in expected.items()
        ) and got["durations"] == dict(predict_requests)

    try:
        got = wait_until(
            lambda: got if matches(got := observed()) else None,
            WAIT_S,
            "Prometheus to have scraped what was sent",
            interval=SCRAPE_INTERVAL_S,
        )
    except AssertionError:
        got = observed()  # the asserts below say what differs
    for name, want in expected.items():
        assert {k: int(v) for k, v in got[name].items()} == want, f"{name}: Prometheus has {got[name]}"
    assert got["durations"] == dict(predict_requests)
    for model in models:
        # Confidences are summed in float64 by each worker; the responses round to 6 decimals.
        assert math.isclose(got["confidence_sum"][(model,)], sent.confidence_sum[model], abs_tol=1e-3)

    # One memory series per live worker (multiprocess "liveall" gauge), one info series per served model.
    pids = prom.query(f"count(mnist_process_resident_memory_bytes{{{sel}}})")
    assert int(float(pids[0]["value"][1])) == WORKERS
    served = prom.by(f"max by (model) (mnist_model_info{{{sel}}})", "model")
    assert set(served) == {(m,) for m in models}

    check_dashboard_queries(prom, started, output_dir)


def check_dashboard_queries(prom: Prometheus, started: float, output_dir: Path) -> None:
    """Every dashboard expression evaluates on the real data; all but failure-only ones return series.
    Their results over the test's time span are drawn as a picture of the dashboard."""
    board = dashboard.load()
    end = time.time()
    span = f"{max(30, math.ceil(end - started) + 5)}s"
    empty = []
    results: dict[tuple[str, str], list[dict]] = {}
    for q in dashboard.queries(board):
        expr = dashboard.concrete(q.expr, rate_interval="5s", range_=span)
        failure_only = dashboard.metric_names(q.expr) <= dashboard.ONLY_AFTER_FAILURES
        if not failure_only and not prom.query(expr, at=end):
            empty.append((q.panel, expr))
        results[(q.panel, q.ref)] = prom.query_range(expr, started - 5, end, 1)
    assert not empty, f"dashboard queries without data: {empty}"
    dashboard.render(board, results, output_dir / "dashboard-rendering.png")
