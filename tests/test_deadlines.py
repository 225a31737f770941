"""A caller's deadline is honoured over a real server: X-Request-Timeout (own API, TF Serving), the v2
`timeout` parameter (REST) and a gRPC call's deadline. Work whose caller has given up is not run: it is
dropped before the model (counted in mnist_requests_expired_total), answered 504 or DEADLINE_EXCEEDED, and
never recorded as a prediction.

The queue-wait cases put a burst in front of the request: a few v2 requests of 1024 images each (about a
second of model work in a one-worker server), then a one-image request whose deadline (0.1 s) is far
shorter than the queue ahead of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.data import load_mnist
from tests.fixtures.server import RunningServer
from tests.service_support import assert_flat_error, assert_own_error, metric, metric_samples
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 30
BURST_REQUESTS = 4
BURST_IMAGES = 1024
DEADLINE_S = 0.1
HEADER = "X-Request-Timeout"


@pytest.fixture(scope="module")
def images(mnist_data_dir: Path) -> np.ndarray:
    return load_mnist(mnist_data_dir).test_images[:BURST_IMAGES]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One worker, so the burst and the request behind it meet in the same micro-batcher queue."""
    from tests.fixtures.server import start_server

    env = {"MNIST_THREADS": "16", "MNIST_MAX_INFLIGHT": "0", "MNIST_MODEL_POLL_S": "0"}
    running = start_server(tmp_path_factory.mktemp("deadlines"), env, workers=1)
    yield running
    running.stop()


def _pixels(images: np.ndarray, n: int = 1) -> list[dict[str, object]]:
    return [{"pixels": images[i].tolist()} for i in range(n)]


def _v2_body(images: np.ndarray, parameters: dict[str, object] | None = None) -> dict[str, object]:
    tensor = {
        "name": "image",
        "datatype": "UINT8",
        "shape": [len(images), 28, 28],
        "data": images.ravel().tolist(),
    }
    return {"inputs": [tensor], **({"parameters": parameters} if parameters else {})}


def _expired(server: RunningServer, **labels: str) -> float:
    return metric(metric_samples(server.url), "mnist_requests_expired_total", **labels)


def _stored(server: RunningServer, request_id: str) -> int:
    with sqlite3.connect(server.db_path) as db:
        query = "SELECT count(*) FROM predictions WHERE request_id = ?"
        return int(db.execute(query, (request_id,)).fetchone()[0])


def _assert_not_recorded(server: RunningServer, request_id: str, images: np.ndarray) -> None:
    """A request sent after it is recorded (the write queue is FIFO); the given-up one never is."""
    control = uuid.uuid4().hex
    r = requests.post(
        f"{server.url}/predict", json=_pixels(images), headers={"X-Request-ID": control}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    wait_until(lambda: _stored(server, control), 30, "the control request's record")
    assert _stored(server, request_id) == 0


def _with_burst(server: RunningServer, images: np.ndarray, call: Callable[[], object]) -> object:
    """Run `call` while BURST_REQUESTS v2 requests of BURST_IMAGES images each keep the model busy."""
    raw = images.astype(np.uint8)
    tensor = {"name": "image", "datatype": "UINT8", "shape": [len(raw), 28, 28]}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": raw.nbytes}}]}).encode()
    statuses: list[int] = []

    def big() -> None:
        r = requests.post(
            f"{server.url}/v2/models/cnn/infer",
            data=header + raw.tobytes(),
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
            timeout=TIMEOUT,
        )
        statuses.append(r.status_code)

    def batches() -> float:
        return metric(metric_samples(server.url), "mnist_batch_size_count", model="cnn")

    before = batches()
    threads = [threading.Thread(target=big) for _ in range(BURST_REQUESTS)]
    for thread in threads:
        thread.start()
    # Once the model has started on the burst, the rest of it (about a second of work) is queued.
    wait_until(lambda: batches() > before, TIMEOUT, "the burst to reach the model", 0.02)
    try:
        return call()
    finally:
        for thread in threads:
            thread.join(TIMEOUT)
        assert statuses == [200] * BURST_REQUESTS  # the burst itself had no deadline


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e9", "", "0.5s", "1_0"])
def test_a_bad_timeout_header_is_a_clear_400(server: RunningServer, images: np.ndarray, value: str) -> None:
    r = requests.post(f"{server.url}/predict", json=_pixels(images), headers={HEADER: value}, timeout=TIMEOUT)
    error = assert_own_error(r, 400, "bad_input")
    assert HEADER in error["message"] and "seconds" in error["message"]
    r = requests.post(
        f"{server.url}/v1/models/cnn:predict",
        json={"instances": [images[0].tolist()]},
        headers={HEADER: value},
        timeout=TIMEOUT,
    )
    assert HEADER in assert_flat_error(r, 400)


def test_a_generous_deadline_changes_nothing(server: RunningServer, images: np.ndarray) -> None:
    r = requests.post(f"{server.url}/predict", json=_pixels(images), headers={HEADER: "30"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    r = requests.post(
        f"{server.url}/v2/models/cnn/infer",
        json=_v2_body(images[:2], {"timeout": 30_000_000}),
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text


def test_a_deadline_gone_on_arrival_is_not_run(server: RunningServer, images: np.ndarray) -> None:
    before = _expired(server, api="predict", stage="arrival")
    rid = uuid.uuid4().hex
    r = requests.post(
        f"{server.url}/predict",
        json=_pixels(images, 4),
        headers={HEADER: "1e-6", "X-Request-ID": rid},
        timeout=TIMEOUT,
    )
    error = assert_own_error(r, 504, "deadline_exceeded")
    assert "not run" in error["message"] or "deadline" in error["message"]
    assert _expired(server, api="predict", stage="arrival") == before + 1
    _assert_not_recorded(server, rid, images)


def test_x_request_timeout_drops_work_queued_behind_a_burst(
    server: RunningServer, images: np.ndarray
) -> None:
    before = _expired(server, api="predict", stage="queued")
    rid = uuid.uuid4().hex

    def late() -> requests.Response:
        return requests.post(
            f"{server.url}/predict",
            json=_pixels(images),
            headers={HEADER: str(DEADLINE_S), "X-Request-ID": rid},
            timeout=TIMEOUT,
        )

    started = time.monotonic()
    r = _with_burst(server, images, late)
    assert isinstance(r, requests.Response)
    assert_own_error(r, 504, "deadline_exceeded")
    assert _expired(server, api="predict", stage="queued") == before + 1
    assert time.monotonic() - started < 10
    _assert_not_recorded(server, rid, images)


def test_the_v2_timeout_parameter_drops_work_queued_behind_a_burst(
    server: RunningServer, images: np.ndarray
) -> None:
    before = _expired(server, api="v2", stage="queued")
    rid = uuid.uuid4().hex

    def late() -> requests.Response:
        body = _v2_body(images[:1], {"timeout": int(DEADLINE_S * 1e6)})
        return requests.post(
            f"{server.url}/v2/models/cnn/infer", json=body, headers={"X-Request-ID": rid}, timeout=TIMEOUT
        )

    r = _with_burst(server, images, late)
    assert isinstance(r, requests.Response)
    assert "deadline" in assert_flat_error(r, 504)
    assert _expired(server, api="v2", stage="queued") == before + 1
    _assert_not_recorded(server, rid, images)


def test_a_grpc_deadline_drops_work_queued_behind_a_burst(server: RunningServer, images: np.ndarray) -> None:
    before = _expired(server, api="v2-grpc")
    rid = uuid.uuid4().hex
    request = service_pb2.ModelInferRequest(
        model_name="cnn",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="UINT8", shape=[1, 28, 28])
        ],
        raw_input_contents=[images[:1].astype(np.uint8).tobytes()],
    )

    def late() -> grpc.StatusCode:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            stub.ServerLive(
                service_pb2.ServerLiveRequest(), timeout=TIMEOUT
            )  # connected before the clock runs
            try:
                stub.ModelInfer(request, timeout=DEADLINE_S, metadata=[("x-request-id", rid)])
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert _with_burst(server, images, late) == grpc.StatusCode.DEADLINE_EXCEEDED
    # The client stops waiting at its deadline; the server notices when the request's turn comes.
    wait_until(lambda: _expired(server, api="v2-grpc") == before + 1, 30, "the gRPC request to be dropped")
    assert _expired(server, api="v2-grpc", stage="waiting") == 0  # dropped before the model, not while in it
    _assert_not_recorded(server, rid, images)
