"""Overload sheds instead of queueing: a real gunicorn server offered 3x its measured capacity for 20 s.

One server (2 workers, MNIST_MAX_INFLIGHT=4 each, 32 threads so that no request waits in gunicorn's own queue
where admission cannot see it, model calls of at most 8 images) and the fixed-rate load generator
(tests/loadgen.py, its own process) posting 48 MNIST digits per request to the own API, as base64 PNG files
(about 20 KB of JSON): enough work per request that the load generator, on the same two cores, can offer 3x
what the server accepts. The run goes in three steps, all in this test so the machine's load is the same for
each: the unloaded latency (a trickle of requests one at a time), the capacity (what the server accepts per
second when offered far more), then 3x that capacity for 20 s.

The bound on accepted requests, derived: a request admitted by a worker shares it with at most
MAX_INFLIGHT - 1 others, each about one unloaded request's work, so it answers within MAX_INFLIGHT unloaded
latencies; the other worker, the load generator (a Python process sending 3x the capacity) and the shed
answers take the machine's two cores with it, a factor of 3 (measured on 2 December 2026: accepted p99 6-8.5x
the unloaded p99). So: accepted p99 <= 3 x MAX_INFLIGHT x unloaded p99 (= 12x). Shed ones: the worker
answers the median one within 1 ms and 9 in 10 within 10 ms (its access log's latency; measured: p50
0.15-0.18 ms, p90 0.24-0.29 ms, p99 8-18 ms). Not every one: the rest wait for the GIL while other request
threads decode their images (LiteRT itself releases it during a model call) and, on a machine other work
shares, for a core. An earlier version of this test sent the digits as JSON pixel lists (140 KB): each
request then held the GIL for milliseconds at a time in JSON and numpy conversion, and 1 shed answer in 10
waited 28-58 ms. The 99th percentile, the maximum and the client's view (which adds the load generator's own
scheduling delay) are reported in test-output/overload.json.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.data import load_mnist
from tests.conftest import ROOT
from tests.fixtures.server import RunningServer, start_server
from tests.service_support import assert_flat_error, assert_own_error, metric, metric_samples, png_bytes
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2
MAX_INFLIGHT = 4
THREADS = 32
IMAGES = 48  # per request: the model's work, not HTTP's, decides the capacity
# Model calls of 8 images (under 2 ms): a shed answer waits less for a batch's Python work around the call;
# the throughput per image is about the same as with 32.
MAX_BATCH = 8
OVERLOAD = 3.0
SECONDS = 20
SHED_WITHIN_MS = 10.0
P99_FACTOR = 3 * MAX_INFLIGHT
HOLD_IMAGES = (
    8192  # the request that holds a worker's only place in test_each_protocol_sheds_in_its_own_shape
)
LOAD_TIMEOUT_S = 5  # per request; every request loop is bounded in count and time


@dataclass(frozen=True)
class Run:
    rate: float
    seconds: float
    results: list[dict[str, Any]]

    def status(self, code: int) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == code]

    def p99(self, code: int = 200) -> float:
        return float(np.percentile([r["ms"] for r in self.status(code)], 99))

    def per_s(self, code: int = 200) -> float:
        return len(self.status(code)) / self.seconds


@dataclass
class Overload:
    server: RunningServer
    unloaded: Run
    capacity: float
    overload: Run
    shed_metric: float
    server_ms: dict[int, list[float]]  # status -> the access log's latencies (ms)
    stored: set[str]


def write_bodies(data_dir: Path, path: Path, count: int = 20) -> None:
    images = load_mnist(data_dir).test_images
    lines = [
        json.dumps(
            {
                "images": [
                    base64.b64encode(png_bytes(images[(i * IMAGES + j) % len(images)])).decode()
                    for j in range(IMAGES)
                ]
            }
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines))


def load(
    server: RunningServer, bodies: Path, out: Path, rate: float, seconds: float, connections: int
) -> Run:
    """One run of tests/loadgen.py in its own process."""
    command = [sys.executable, "-m", "tests.loadgen", f"{server.url}/predict", str(bodies), str(out)]
    options = ["--rate", f"{rate:.1f}", "--seconds", str(seconds), "--connections", str(connections)]
    subprocess.run(
        [*command, *options, "--timeout", str(LOAD_TIMEOUT_S)], cwd=ROOT, check=True, timeout=seconds + 120
    )
    summary = json.loads(out.read_text())
    return Run(rate, float(summary["seconds"]), summary["results"])


def access_latencies(server: RunningServer) -> dict[int, list[float]]:
    """The server's own latency of each /predict answer, by status, from its JSON access log."""
    found: dict[int, list[float]] = {}
    for line in server.logs().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("route") == "/predict" and "latency_ms" in entry:
            found.setdefault(int(entry["status"]), []).append(float(entry["latency_ms"]))
    return found


@pytest.fixture(scope="module")
def overload(
    mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> Iterator[Overload]:
    work = tmp_path_factory.mktemp("overload")
    bodies = work / "bodies.jsonl"
    write_bodies(mnist_data_dir, bodies)
    env = {
        "MNIST_MAX_INFLIGHT": str(MAX_INFLIGHT),
        "MNIST_THREADS": str(THREADS),
        "MNIST_MAX_BATCH_SIZE": str(MAX_BATCH),
        "MNIST_MODEL_POLL_S": "0",
    }
    server = start_server(work / "server", env, workers=WORKERS)
    try:
        unloaded = load(server, bodies, work / "unloaded.json", 10, 6, 1)
        # Far more than the server can take: what it accepts per second is its capacity.
        probe = load(server, bodies, work / "probe.json", 400, 5, 2 * THREADS)
        capacity = probe.per_s()
        before = metric(metric_samples(server.url), "mnist_requests_shed_total", api="predict")
        run = load(server, bodies, work / "overload.json", OVERLOAD * capacity, SECONDS, 2 * THREADS)
        shed_metric = metric(metric_samples(server.url), "mnist_requests_shed_total", api="predict") - before
    finally:
        server.stop()  # SIGTERM: the write queues drain into the store
    with sqlite3.connect(server.db_path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM predictions")}
    latencies = access_latencies(server)
    outcome = Overload(server, unloaded, capacity, run, shed_metric, latencies, stored)
    report = {
        "unloaded_p99_ms": unloaded.p99(),
        "capacity_requests_per_s": capacity,
        "offered_per_s": run.rate,
        "accepted_per_s": run.per_s(200),
        "shed_per_s": run.per_s(503),
        "accepted_p99_ms": run.p99(200),
        "accepted_p99_bound_ms": P99_FACTOR * unloaded.p99(),
        "shed_client_p99_ms": run.p99(503) if run.status(503) else None,
        "shed_server_p50_ms": float(np.percentile(latencies.get(503, [0.0]), 50)),
        "shed_server_p90_ms": float(np.percentile(latencies.get(503, [0.0]), 90)),
        "shed_server_p99_ms": float(np.percentile(latencies.get(503, [0.0]), 99)),
        "shed_server_max_ms": max(latencies.get(503, [0.0])),
        "shed_server_over_10ms": sum(ms > SHED_WITHIN_MS for ms in latencies.get(503, [])),
        "load_generator_late_p99_ms": float(np.percentile([r["late_ms"] for r in run.results], 99)),
        "other_statuses": sorted({str(r["status"]) for r in run.results} - {"200", "503"}),
    }
    (output_dir / "overload.json").write_text(json.dumps(report, indent=2))
    print(f"\noverload test: {report}")
    yield outcome


def test_load_generator_reached_three_times_capacity(overload: Overload) -> None:
    assert overload.capacity > 0
    sent_per_s = len(overload.overload.results) / overload.overload.seconds
    assert sent_per_s >= 0.9 * OVERLOAD * overload.capacity, (sent_per_s, overload.capacity)


def test_only_answers_and_sheds(overload: Overload) -> None:
    """No other 5xx, no failed connection: each request was answered (200) or shed (503)."""
    others = [r for r in overload.overload.results if r["status"] not in (200, 503)]
    assert not others, sorted({str(r["error"]) for r in others})[:5]
    assert overload.overload.status(503), "3x the capacity shed nothing"
    assert overload.overload.status(200), "nothing was accepted"


def test_accepted_latency_is_bounded(overload: Overload) -> None:
    bound = P99_FACTOR * overload.unloaded.p99()
    assert overload.overload.p99(200) <= bound, (overload.overload.p99(200), bound)


def test_shed_answers_are_immediate_and_say_when_to_retry(overload: Overload) -> None:
    shed = overload.overload.status(503)
    for r in shed:
        assert r["retry_after"] == "1", r
        error = json.loads(r["error"])["error"]
        assert error["code"] == "overloaded" and "MNIST_MAX_INFLIGHT" in error["message"], error
    server_ms = overload.server_ms.get(503, [])
    assert len(server_ms) >= len(shed)  # the probe's sheds are in the log too
    # Typical shed answers take a fraction of a millisecond of the worker's time; the tail is time spent
    # waiting for the GIL (held by other requests' Python work: JSON decoding, records) and, on a machine
    # whose cores other work takes too, for a core. So the median is held to a millisecond and 9 in 10 to
    # 10 ms; the 99th percentile and the maximum are in test-output/overload.json (not asserted: see the
    # module docstring).
    median, p90 = (float(np.percentile(server_ms, q)) for q in (50, 90))
    slow = sorted(ms for ms in server_ms if ms > SHED_WITHIN_MS)
    assert median <= 1.0 and p90 <= SHED_WITHIN_MS, (
        f"shed answers: median {median:.2f} ms, p90 {p90:.2f} ms; {len(slow)} of {len(server_ms)} over "
        f"{SHED_WITHIN_MS} ms: {slow[-10:]}"
    )


def test_shed_requests_are_counted(overload: Overload) -> None:
    assert overload.shed_metric == len(overload.overload.status(503))


def test_every_accepted_prediction_is_recorded(overload: Overload) -> None:
    answered = [i for r in overload.overload.status(200) for i in r["ids"]]
    assert len(answered) == IMAGES * len(overload.overload.status(200))
    missing = set(answered) - overload.stored
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions not in the store"


def test_each_protocol_sheds_in_its_own_shape(server_factory, mnist_data_dir: Path) -> None:
    """A worker with one place, held by a long v2 request: own API, TF Serving and v2 REST answer 503 with
    Retry-After in their error shapes, gRPC UNAVAILABLE, each counted with its API."""
    server = server_factory(
        {
            "MNIST_MAX_INFLIGHT": "1",
            "MNIST_THREADS": "8",
            "MNIST_MODEL_POLL_S": "0",
            "MNIST_MAX_IMAGES_PER_REQUEST": str(HOLD_IMAGES),
            "MNIST_MAX_UPLOAD_BYTES": str(2 * HOLD_IMAGES * 784),
        },
        workers=1,
    )
    images = load_mnist(mnist_data_dir).test_images
    held = np.resize(images, (HOLD_IMAGES, 28, 28))  # about 1.5 s of model work
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": list(held.shape),
                    "parameters": {"binary_data_size": held.nbytes},
                }
            ]
        }
    ).encode()
    before = metric_samples(server.url)
    holder: list[int] = []

    def hold() -> None:
        r = requests.post(
            f"{server.url}/v2/models/cnn/infer",
            data=header + held.tobytes(),
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
            timeout=60,
        )
        holder.append(r.status_code)

    thread = threading.Thread(target=hold)
    thread.start()
    batches = lambda: metric(metric_samples(server.url), "mnist_batch_size_count", model="cnn")  # noqa: E731
    wait_until(
        lambda: batches() > metric(before, "mnist_batch_size_count", model="cnn"), 30, "the long request"
    )
    one = images[0]
    own = requests.post(f"{server.url}/predict", json={"pixels": one.tolist()}, timeout=30)
    tf = requests.post(f"{server.url}/v1/models/cnn:predict", json={"instances": [one.tolist()]}, timeout=30)
    v2 = requests.post(
        f"{server.url}/v2/models/cnn/infer",
        json={
            "inputs": [
                {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": one.ravel().tolist()}
            ]
        },
        timeout=30,
    )
    request = service_pb2.ModelInferRequest(
        model_name="cnn",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="UINT8", shape=[1, 28, 28])
        ],
        raw_input_contents=[one.tobytes()],
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request, timeout=30)
    thread.join(60)
    assert holder == [200], "the long request should have been the one admitted"
    assert assert_own_error(own, 503, "overloaded") and own.headers["Retry-After"] == "1"
    for answer in (tf, v2):
        assert "MNIST_MAX_INFLIGHT" in assert_flat_error(answer, 503) and answer.headers["Retry-After"] == "1"
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("grpc-retry-pushback-ms", "1000") in raised.value.trailing_metadata()
    after = metric_samples(server.url)
    for api in ("predict", "tfserving", "v2", "v2-grpc"):
        shed = metric(after, "mnist_requests_shed_total", api=api) - metric(
            before, "mnist_requests_shed_total", api=api
        )
        assert shed == 1, api
