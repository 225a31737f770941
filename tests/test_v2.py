"""Open Inference Protocol v2, with NVIDIA's own client (tritonclient[http]) as the caller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.service_support import Digit, assert_flat_error, digits

pytestmark = pytest.mark.integration
TIMEOUT = 30


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 10, start=200)


@pytest.fixture
def client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.url.split("://", 1)[1], network_timeout=TIMEOUT)


def _infer(client, model: str, array: np.ndarray, datatype: str, binary: bool, version: str = ""):
    inp = httpclient.InferInput("image", list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("digit", binary_data=binary),
    ]
    return client.infer(model, [inp], outputs=outputs, model_version=version)


def test_server_and_models_report_live_and_ready(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    for name in ("cnn", "softmax"):
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["name"] == name
        assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
            "probabilities": "FP32",
            "digit": "INT64",
        }
        assert client.is_model_ready(name, model_version=meta["versions"][0])
        assert client.get_model_metadata(name, model_version=meta["versions"][0]) == meta
    assert client.get_server_metadata()["extensions"]
    assert not client.is_model_ready("resnet")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    ("shape", "datatype"),
    [((784,), "FP32"), ((28, 28), "FP32"), ((28, 28, 1), "FP32"), ((784,), "UINT8"), ((28, 28), "UINT8")],
)
def test_a_round_trip_gives_probabilities_and_digits(
    client, sample: list[Digit], shape: tuple[int, ...], datatype: str, binary: bool
) -> None:
    pixels = np.stack([d.pixels for d in sample]).reshape(len(sample), *shape)
    array = pixels.astype(np.uint8) if datatype == "UINT8" else (pixels / 255.0).astype(np.float32)
    result = _infer(client, "cnn", array, datatype, binary)
    probabilities = result.as_numpy("probabilities")
    digit = result.as_numpy("digit")
    assert probabilities.shape == (len(sample), 10) and probabilities.dtype == np.float32
    assert digit.shape == (len(sample),) and digit.dtype == np.int64
    np.testing.assert_array_equal(digit, probabilities.argmax(axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    right = int((digit == np.array([d.label for d in sample])).sum())
    assert right >= len(sample) - 1
    assert result.get_response()["model_name"] == "cnn"


def test_the_versioned_path_and_both_models_work(client, sample: list[Digit]) -> None:
    array = np.stack([d.pixels for d in sample]).astype(np.uint8)
    for name in ("cnn", "softmax"):
        version = client.get_model_metadata(name)["versions"][0]
        result = _infer(client, name, array, "UINT8", True, version=version)
        assert result.get_response()["model_version"] == version
        assert result.as_numpy("digit").shape == (len(sample),)


def test_v2_answers_match_the_own_api(server, client, sample: list[Digit]) -> None:
    result = _infer(client, "cnn", (sample[0].pixels[None] / 255.0).astype(np.float32), "FP32", True)
    own = requests.post(f"{server.url}/predict", json={"pixels": sample[0].unit}, timeout=TIMEOUT).json()
    np.testing.assert_allclose(result.as_numpy("probabilities")[0], own["probabilities"], atol=1e-5)


def test_an_unknown_model_is_an_error_for_the_client(client, sample: list[Digit]) -> None:
    with pytest.raises(InferenceServerException, match="resnet"):
        _infer(client, "resnet", sample[0].pixels[None].astype(np.uint8), "UINT8", True)


def test_requested_outputs_are_the_only_ones_returned(server, sample: list[Digit]) -> None:
    body = {
        "id": "req-7",
        "inputs": [
            {
                "name": "image",
                "shape": [1, 784],
                "datatype": "UINT8",
                "data": sample[0].pixels.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "digit"}],
    }
    answer = requests.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=TIMEOUT).json()
    assert answer["id"] == "req-7"
    assert [o["name"] for o in answer["outputs"]] == ["digit"]
    assert answer["outputs"][0]["data"] == [sample[0].label]


def _tensor(**overrides: object) -> dict:
    tensor = {"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}
    tensor.update(overrides)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"inputs": []},
        _tensor(datatype="BYTES"),
        _tensor(shape=[1, 783]),
        _tensor(shape=[1, 28, 27]),
        _tensor(shape="1x784"),
        _tensor(shape=[0, 784], data=[]),
        _tensor(data=[0.5] * 783),
        _tensor(data=["a"] * 784),
        _tensor(data=[300.0] * 784),
        _tensor(datatype="UINT8", data=[0.5] * 784),
        _tensor(parameters={"binary_data_size": 3136}),
        {"inputs": [_tensor()["inputs"][0]], "outputs": [{"name": "logits"}]},
    ],
)
def test_bad_inference_requests_are_400_with_a_flat_error(server, body: dict) -> None:
    assert_flat_error(requests.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=TIMEOUT), 400)


def test_nan_in_binary_fp32_data_is_refused(server) -> None:
    data = np.full((1, 784), np.nan, dtype=np.float32).tobytes()
    tensor = {
        "name": "image",
        "shape": [1, 784],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 3136},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    r = requests.post(
        f"{server.url}/v2/models/cnn/infer",
        data=header + data,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
        timeout=TIMEOUT,
    )
    assert "finite" in assert_flat_error(r, 400)
