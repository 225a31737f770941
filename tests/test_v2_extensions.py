"""The v2 extensions over REST, with tritonclient[http]: model configuration, statistics, classification,
request parameters, and the server metadata naming exactly what is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.service_support import Digit, digits

pytestmark = pytest.mark.integration
TIMEOUT = 30


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 16, start=500)


@pytest.fixture
def client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.url.split("://", 1)[1], network_timeout=TIMEOUT)


def _images(sample: list[Digit]) -> np.ndarray:
    return np.stack([d.pixels for d in sample]).astype(np.float32) / 255


def _infer(client, array: np.ndarray, outputs=None, model: str = "cnn", **kwargs):
    inp = httpclient.InferInput("image", list(array.shape), "FP32")
    inp.set_data_from_numpy(array, binary_data=True)
    return client.infer(model, [inp], outputs=outputs, **kwargs)


def test_extensions_are_exactly_what_is_served(server, client) -> None:
    extensions = client.get_server_metadata()["extensions"]
    assert extensions == [
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "model_repository",
        "parameters",
        "statistics",
    ]
    # Each named extension answers: configuration and statistics routes exist for every model.
    for name in ("cnn", "softmax"):
        assert requests.get(f"{server.url}/v2/models/{name}/config", timeout=TIMEOUT).status_code == 200
        assert requests.get(f"{server.url}/v2/models/{name}/stats", timeout=TIMEOUT).status_code == 200


def test_model_config_is_tritons_shape(client) -> None:
    config = client.get_model_config("cnn")
    assert config["name"] == "cnn" and config["platform"] == "tflite"
    assert config["max_batch_size"] == 32
    assert config["input"] == [
        {"name": "image", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [28, 28]}
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("probabilities", "TYPE_FP32", [10]),
        ("digit", "TYPE_INT64", [1]),
    ]
    assert config["dynamic_batching"] == {"preferred_batch_size": [32], "max_queue_delay_microseconds": 2000}
    version = client.get_model_metadata("cnn")["versions"][0]
    assert client.get_model_config("cnn", model_version=version) == config
    with pytest.raises(InferenceServerException, match="no model named"):
        client.get_model_config("resnet")


def test_statistics_count_rest_requests(client, sample: list[Digit]) -> None:
    before = client.get_inference_statistics("cnn")["model_stats"][0]
    for i in range(5):
        _infer(client, _images(sample[i : i + 3]))
    after = client.get_inference_statistics("cnn")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 15
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 5
    for key in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][key]["ns"] >= before["inference_stats"][key]["ns"]
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert 1 <= after["execution_count"] - before["execution_count"] <= 5
    every = client.get_inference_statistics()["model_stats"]
    assert sorted(s["name"] for s in every) == ["cnn", "softmax"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_over_rest(client, sample: list[Digit], binary: bool) -> None:
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3),
        httpclient.InferRequestedOutput("digit", binary_data=binary),
    ]
    result = _infer(client, _images(sample[:4]), outputs=outputs)
    top = result.as_numpy("probabilities")
    assert top.shape == (4, 3)
    for row, digit in zip(top, sample[:4], strict=True):
        item = row[0].decode() if isinstance(row[0], bytes) else row[0]
        score, index, label = item.split(":")
        assert int(index) == digit.label and label == str(digit.label) and 0 < float(score) <= 1
    assert result.as_numpy("digit").tolist() == [d.label for d in sample[:4]]


def test_request_parameters_accepted_and_checked(server, client, sample: list[Digit]) -> None:
    result = _infer(client, _images(sample[:1]), priority=1, timeout=1_000_000)
    assert result.as_numpy("digit").tolist() == [sample[0].label]
    base = {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]}
    ignored = {**base, "parameters": {"my_own_tag": "x"}}
    assert (
        requests.post(f"{server.url}/v2/models/cnn/infer", json=ignored, timeout=TIMEOUT).status_code == 200
    )
    for bad in ({"priority": -1}, {"timeout": "soon"}):
        answer = requests.post(
            f"{server.url}/v2/models/cnn/infer", json={**base, "parameters": bad}, timeout=TIMEOUT
        )
        assert answer.status_code == 400 and next(iter(bad)) in answer.json()["error"]


def test_fp16_binary_and_int64_json(server, client, sample: list[Digit]) -> None:
    images = _images(sample[:2]).reshape(2, 784)
    inp = httpclient.InferInput("image", [2, 784], "FP16")
    inp.set_data_from_numpy(images.astype(np.float16), binary_data=True)
    assert client.infer("cnn", [inp]).as_numpy("digit").tolist() == [d.label for d in sample[:2]]
    pixels = np.rint(images * 255).astype(int)
    body = {
        "inputs": [{"name": "image", "shape": [2, 784], "datatype": "INT64", "data": pixels.ravel().tolist()}]
    }
    answer = requests.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=TIMEOUT).json()
    assert answer["outputs"][1]["data"] == [d.label for d in sample[:2]]
    fp16_json = {"inputs": [{**body["inputs"][0], "datatype": "FP16"}]}
    refused = requests.post(f"{server.url}/v2/models/cnn/infer", json=fp16_json, timeout=TIMEOUT)
    assert refused.status_code == 400 and "binary" in refused.json()["error"]
