"""Open Inference Protocol v2 over gRPC, with NVIDIA's own client (tritonclient[grpc]) on the real server.

Every RPC the server implements, the data types and both input forms (raw_input_contents, typed contents),
classification, statistics summed across workers, the records in the store, the metrics, and a battery of
bad calls that must get the right status code and leave every worker alive.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.service_support import Digit, digits
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration
TIMEOUT = 30
SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 32, start=300)


@pytest.fixture
def client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=server.grpc_target)


@pytest.fixture
def stub(server):
    """The generated stub, for calls tritonclient cannot make (typed contents, malformed requests)."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _infer(client, array: np.ndarray, datatype: str, model: str = "cnn", outputs=None, **kwargs):
    inp = grpcclient.InferInput("image", list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return client.infer(model, [inp], outputs=outputs, client_timeout=TIMEOUT, **kwargs)


def _unit(sample: list[Digit]) -> np.ndarray:
    return np.stack([d.pixels for d in sample]).astype(np.float32) / 255


def test_health_metadata_config_and_index(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "mnist-service"
    assert set(meta["extensions"]) == {
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "parameters",
        "statistics",
    }
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["name"] for m in index} == {"cnn", "softmax"}
    assert {m["state"] for m in index} == {"READY"}
    for name in ("cnn", "softmax"):
        assert client.is_model_ready(name)
        model = client.get_model_metadata(name, as_json=True)
        assert model["name"] == name and model["platform"] == "tflite"
        assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
            ("image", "FP32", ["-1", "28", "28"])
        ]
        assert {t["name"]: t["datatype"] for t in model["outputs"]} == {
            "probabilities": "FP32",
            "digit": "INT64",
        }
        assert client.is_model_ready(name, model_version=model["versions"][0])
        config = client.get_model_config(name, as_json=True)["config"]
        assert config["name"] == name and config["max_batch_size"] == 32
        assert config["input"][0] == {"name": "image", "data_type": "TYPE_FP32", "dims": ["28", "28"]}
        assert [o["name"] for o in config["output"]] == ["probabilities", "digit"]
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"


@pytest.mark.parametrize(
    ("datatype", "convert"),
    [
        ("FP32", lambda u: u.astype(np.float32)),
        ("FP64", lambda u: u.astype(np.float64)),
        ("FP16", lambda u: u.astype(np.float16)),
        ("UINT8", lambda u: np.rint(u * 255).astype(np.uint8)),
        ("INT64", lambda u: np.rint(u * 255).astype(np.int64)),
    ],
)
def test_infer_raw_contents_every_datatype(client, sample: list[Digit], datatype: str, convert) -> None:
    array = convert(_unit(sample[:8]).reshape(8, 784))
    result = _infer(client, array, datatype)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (8, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert result.as_numpy("digit").tolist() == [d.label for d in sample[:8]]
    response = result.get_response(as_json=True)
    assert response["model_name"] == "cnn" and response["model_version"]


def test_grpc_and_rest_give_the_same_answer(server, client, sample: list[Digit]) -> None:
    array = _unit(sample[:4])
    grpc_probs = _infer(client, array, "FP32").as_numpy("probabilities")
    body = {
        "inputs": [
            {"name": "image", "shape": [4, 28, 28], "datatype": "FP32", "data": array.ravel().tolist()}
        ],
        "outputs": [{"name": "probabilities"}],
    }
    rest = requests.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=TIMEOUT).json()
    np.testing.assert_allclose(grpc_probs.ravel(), rest["outputs"][0]["data"], rtol=1e-6)


@pytest.mark.parametrize(
    ("datatype", "field", "convert"),
    [
        ("FP32", "fp32_contents", lambda u: u.tolist()),
        ("FP64", "fp64_contents", lambda u: u.tolist()),
        ("UINT8", "uint_contents", lambda u: np.rint(u * 255).astype(int).tolist()),
        ("INT64", "int64_contents", lambda u: np.rint(u * 255).astype(int).tolist()),
    ],
)
def test_infer_typed_contents(stub, sample: list[Digit], datatype: str, field: str, convert) -> None:
    values = convert(_unit(sample[:3]).ravel())
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype=datatype, shape=[3, 28, 28]
    )
    getattr(tensor.contents, field).extend(values)
    request = service_pb2.ModelInferRequest(model_name="softmax", id="typed-1", inputs=[tensor])
    response = stub.ModelInfer(request, timeout=TIMEOUT)
    assert response.id == "typed-1" and response.model_name == "softmax"
    assert [o.name for o in response.outputs] == ["probabilities", "digit"]
    digits_out = np.frombuffer(response.raw_output_contents[1], dtype="<i8")
    assert len(digits_out) == 3 and all(0 <= d <= 9 for d in digits_out)


def test_classification_top_k(client, sample: list[Digit]) -> None:
    array = _unit(sample[:5])
    outputs = [grpcclient.InferRequestedOutput("probabilities", class_count=3)]
    result = _infer(client, array, "FP32", outputs=outputs)
    top = result.as_numpy("probabilities")
    assert top.shape == (5, 3)
    for row, digit in zip(top, sample[:5], strict=True):
        scores = [float(item.decode().split(":")[0]) for item in row]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        _score, index, label = row[0].decode().split(":")
        assert int(index) == digit.label and label == str(digit.label)


def test_statistics_sum_over_workers(server, client, sample: list[Digit]) -> None:
    def stats() -> dict:
        return client.get_inference_statistics("softmax", as_json=True)["model_stats"][0]

    before = stats()
    sent = 0
    # Fresh connections: SO_REUSEPORT spreads them over the workers, and the statistics must add all up.
    for i in range(12):
        with grpcclient.InferenceServerClient(url=server.grpc_target) as fresh:
            _infer(fresh, _unit(sample[i : i + 2]), "FP32", model="softmax")
            sent += 2
    after = stats()
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == sent
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert 1 <= executions <= 12
    success = after["inference_stats"]["success"]
    grew = int(success["count"]) - int(before.get("inference_stats", {}).get("success", {}).get("count", 0))
    assert grew == 12
    assert int(success["ns"]) > 0 and int(after["inference_stats"]["compute_infer"]["ns"]) > 0
    assert int(after["last_inference"]) > 0
    rest = requests.get(f"{server.url}/v2/models/softmax/stats", timeout=TIMEOUT).json()["model_stats"][0]
    assert rest["inference_count"] == int(after["inference_count"])
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in every} == {"cnn", "softmax"}


def test_calls_reach_every_worker_and_land_in_the_store(server, sample: list[Digit]) -> None:
    before = _grpc_infer_pids(server)
    for i in range(16):
        with grpcclient.InferenceServerClient(url=server.grpc_target) as fresh:
            _infer(fresh, _unit(sample[i : i + 1]), "FP32", model="cnn")

    def new_calls() -> list[int] | None:
        pids = _grpc_infer_pids(server)[len(before) :]
        return pids if len(pids) >= 16 else None

    pids = wait_until(new_calls, timeout=10, what="16 access lines of gRPC ModelInfer calls")
    assert len(set(pids)) == 2, f"16 connections all went to one worker: {pids}"

    def stored() -> int:
        with sqlite3.connect(server.db_path) as db:
            rows = db.execute("SELECT extra FROM predictions").fetchall()
        return sum(json.loads(extra).get("api") == "v2-grpc" for (extra,) in rows)

    assert wait_until(lambda: stored() >= 16, timeout=10, what="16 records with api v2-grpc")


def _grpc_infer_pids(server) -> list[int]:
    pids = []
    for line in server.logs().splitlines():
        if f"/{SERVICE}/ModelInfer" in line and line.startswith("{"):
            doc = json.loads(line)
            if doc.get("grpc_status") == "OK":
                pids.append(doc["pid"])
    return pids


def test_grpc_calls_have_their_own_request_metrics(server, client, sample: list[Digit]) -> None:
    """gRPC calls count in mnist_grpc_* with the gRPC code, never in the HTTP request metrics."""
    _infer(client, _unit(sample[:1]), "FP32")
    text = requests.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    match = re.search(r'mnist_grpc_requests_total\{code="OK",rpc="ModelInfer"\} (\d+)', text)
    assert match and int(match.group(1)) >= 1, text[:2000]
    assert re.search(r'mnist_grpc_request_duration_seconds_count\{rpc="ModelInfer"\} [1-9]', text)
    assert "GRPCInferenceService" not in "".join(
        line for line in text.splitlines() if line.startswith("mnist_http_")
    )
    assert re.search(
        r'mnist_model_requests_total\{api="v2-grpc",model="cnn",outcome="success",version="\d+"\}', text
    ), text[:2000]


def _status(call) -> grpc.StatusCode:
    with pytest.raises(InferenceServerException) as info:
        call()
    return grpc.StatusCode[info.value.status().split(".")[-1]]


@pytest.mark.parametrize(
    ("shape", "datatype", "data", "expected"),
    [
        ([2, 27, 28], "FP32", np.zeros((2, 27, 28), np.float32), "INVALID_ARGUMENT"),
        ([0, 784], "FP32", np.zeros((0, 784), np.float32), "INVALID_ARGUMENT"),
        ([1, 784], "INT32", np.zeros((1, 784), np.int32), "INVALID_ARGUMENT"),
        ([1, 784], "BOOL", np.zeros((1, 784), np.bool_), "INVALID_ARGUMENT"),
        ([1, 784], "FP32", np.full((1, 784), np.nan, np.float32), "INVALID_ARGUMENT"),
        ([1, 784], "FP32", np.full((1, 784), 300, np.float32), "INVALID_ARGUMENT"),
        ([1025, 784], "UINT8", np.zeros((1025, 784), np.uint8), "INVALID_ARGUMENT"),
    ],
    ids=["shape", "empty-batch", "int32", "bool", "nan", "range", "too-many-images"],
)
def test_bad_input_is_invalid_argument(client, shape, datatype, data, expected) -> None:
    inp = grpcclient.InferInput("image", shape, datatype)
    inp.set_data_from_numpy(data)
    status = _status(lambda: client.infer("cnn", [inp], client_timeout=TIMEOUT))
    assert status.name == expected


def test_error_battery_status_codes_and_workers_survive(server, client, stub) -> None:
    workers = _worker_pids(server)
    ok = np.zeros((1, 784), np.float32)
    assert _status(lambda: _infer(client, ok, "FP32", model="resnet")) == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: _infer(client, ok, "FP32", model_version="999")) == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: client.get_model_metadata("resnet")) == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: client.get_model_config("resnet")) == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: client.get_inference_statistics("resnet")) == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: client.is_model_ready("resnet")) == grpc.StatusCode.NOT_FOUND
    # 6 MB in one message: over the 5 MB cap (MNIST_MAX_UPLOAD_BYTES), refused by gRPC itself.
    huge = np.zeros((2000, 784), np.float32)
    assert _status(lambda: _infer(client, huge, "FP32")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    bad_output = [grpcclient.InferRequestedOutput("logits")]
    assert _status(lambda: _infer(client, ok, "FP32", outputs=bad_output)) == grpc.StatusCode.INVALID_ARGUMENT
    digit_classes = [grpcclient.InferRequestedOutput("digit", class_count=2)]
    assert (
        _status(lambda: _infer(client, ok, "FP32", outputs=digit_classes)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _status(lambda: _infer(client, ok, "FP32", priority=1, timeout=-1))
        == grpc.StatusCode.INVALID_ARGUMENT
    )

    def raw(request: service_pb2.ModelInferRequest) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=TIMEOUT)
        assert info.value.details()  # every refusal says why
        return info.value.code()

    tensor = service_pb2.ModelInferRequest.InferInputTensor
    one = tensor(name="image", datatype="FP32", shape=[1, 784])
    assert raw(service_pb2.ModelInferRequest(model_name="cnn")) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        raw(service_pb2.ModelInferRequest(model_name="cnn", inputs=[one])) == grpc.StatusCode.INVALID_ARGUMENT
    )
    short = service_pb2.ModelInferRequest(model_name="cnn", inputs=[one], raw_input_contents=[b"\0" * 100])
    assert raw(short) == grpc.StatusCode.INVALID_ARGUMENT
    two = service_pb2.ModelInferRequest(model_name="cnn", inputs=[one, one], raw_input_contents=[b"", b""])
    assert raw(two) == grpc.StatusCode.INVALID_ARGUMENT
    fp16 = tensor(name="image", datatype="FP16", shape=[1, 784])
    fp16.contents.fp32_contents.extend([0.0] * 784)
    assert (
        raw(service_pb2.ModelInferRequest(model_name="cnn", inputs=[fp16]))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    wrong_field = tensor(name="image", datatype="FP32", shape=[1, 784])
    wrong_field.contents.int64_contents.extend([0] * 784)
    assert (
        raw(service_pb2.ModelInferRequest(model_name="cnn", inputs=[wrong_field]))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # Afterwards: the same workers, all ready, still answering.
    assert _worker_pids(server) == workers
    assert client.is_server_ready()
    assert _infer(client, ok, "FP32").as_numpy("digit").shape == (1,)
    assert '"status": 500' not in server.logs()


def _worker_pids(server) -> set[int]:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def test_grpc_port_zero_turns_it_off(server_factory) -> None:
    on = server_factory(workers=1)
    off = server_factory({"MNIST_GRPC_PORT": "0"}, workers=1)
    assert "gRPC (Open Inference Protocol v2) on" in on.logs()
    assert "gRPC (Open Inference Protocol v2) on" not in off.logs()
    assert requests.get(f"{off.url}/v2/health/ready", timeout=TIMEOUT).status_code == 200


def test_readme_rpc_table_is_what_the_servicer_serves() -> None:
    """README's RPC table lists exactly the RPCs implemented (the rest answer UNIMPLEMENTED)."""
    from service.grpc.servicer import InferenceServicer
    from tests.conftest import ROOT

    served = {name for name in vars(InferenceServicer) if name[0].isupper()}
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| RPC | What it does |", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)) == served
