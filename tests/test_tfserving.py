"""TensorFlow Serving REST compatibility, called the way TF Serving clients call it (plain `requests`)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.service_support import Digit, assert_flat_error, digits

pytestmark = pytest.mark.integration
TIMEOUT = 30


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 8, start=100)


def _version(server, name: str) -> str:
    models = requests.get(f"{server.url}/api/models", timeout=TIMEOUT).json()["models"]
    return next(m["version"] for m in models if m["name"] == name)


@pytest.mark.parametrize("name", ["cnn", "softmax"])
def test_model_status_reports_the_served_version_available(server, name: str) -> None:
    version = _version(server, name)
    for path in (f"/v1/models/{name}", f"/v1/models/{name}/versions/{version}"):
        body = requests.get(f"{server.url}{path}", timeout=TIMEOUT).json()
        (status,) = body["model_version_status"]
        assert status["version"] == version and status["state"] == "AVAILABLE"
        assert status["status"]["error_code"] == "OK"


def test_metadata_describes_the_serving_signature(server) -> None:
    body = requests.get(f"{server.url}/v1/models/cnn/metadata", timeout=TIMEOUT).json()
    assert body["model_spec"]["name"] == "cnn"
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    (inp,) = signature["inputs"].values()
    (out,) = signature["outputs"].values()
    assert [d["size"] for d in inp["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert [d["size"] for d in out["tensor_shape"]["dim"]] == ["-1", "10"]
    version = _version(server, "cnn")
    versioned = requests.get(
        f"{server.url}/v1/models/cnn/versions/{version}/metadata", timeout=TIMEOUT
    ).json()
    assert versioned == body
    assert_flat_error(requests.get(f"{server.url}/v1/models/cnn/versions/999/metadata", timeout=TIMEOUT), 404)


def test_row_format_instances_in_every_layout_and_scale_agree(server, sample: list[Digit]) -> None:
    layouts = {
        "28x28 0..1": [d.unit for d in sample],
        "28x28 0..255": [d.pixels.tolist() for d in sample],
        "28x28x1": [(d.pixels[..., None] / 255.0).tolist() for d in sample],
        "784": [d.pixels.reshape(-1).tolist() for d in sample],
        "named": [{"image": d.unit} for d in sample],
    }
    answers = {}
    for layout, instances in layouts.items():
        r = requests.post(
            f"{server.url}/v1/models/cnn:predict", json={"instances": instances}, timeout=TIMEOUT
        )
        assert r.status_code == 200, (layout, r.text)
        predictions = np.array(r.json()["predictions"])
        assert predictions.shape == (len(sample), 10), layout
        answers[layout] = predictions
    reference = answers["28x28 0..1"]
    for layout, predictions in answers.items():
        np.testing.assert_allclose(predictions, reference, atol=1e-5, err_msg=layout)
    right = sum(int(p.argmax()) == d.label for p, d in zip(reference, sample, strict=True))
    assert right >= len(sample) - 1


def test_image_files_as_b64_instances_are_decoded_like_uploads(server, sample: list[Digit]) -> None:
    instances = [{"b64": base64.b64encode(d.png).decode()} for d in sample[:3]]
    instances.append({"image": {"b64": base64.b64encode(sample[3].png).decode()}})
    instances.append(sample[4].unit)  # forms may be mixed
    r = requests.post(f"{server.url}/v1/models/cnn:predict", json={"instances": instances}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    predictions = np.array(r.json()["predictions"])
    own = requests.post(f"{server.url}/predict", files={"image": sample[0].png}, timeout=TIMEOUT).json()
    np.testing.assert_allclose(predictions[0], own["probabilities"], atol=1e-5)
    right = sum(int(p.argmax()) == d.label for p, d in zip(predictions, sample[:5], strict=True))
    assert right >= 4
    bad = requests.post(
        f"{server.url}/v1/models/cnn:predict", json={"instances": [{"b64": "%%%"}]}, timeout=TIMEOUT
    )
    assert_flat_error(bad, 400)


def test_columnar_inputs_answer_outputs(server, sample: list[Digit]) -> None:
    batch = requests.post(
        f"{server.url}/v1/models/softmax:predict", json={"inputs": [d.unit for d in sample]}, timeout=TIMEOUT
    ).json()
    one = requests.post(
        f"{server.url}/v1/models/softmax:predict", json={"inputs": {"image": sample[0].unit}}, timeout=TIMEOUT
    ).json()
    assert np.array(batch["outputs"]).shape == (len(sample), 10)
    np.testing.assert_allclose(one["outputs"][0], batch["outputs"][0], atol=1e-5)


def test_the_versioned_predict_path_works_and_a_wrong_version_is_a_404(server, sample: list[Digit]) -> None:
    version = _version(server, "cnn")
    body = {"signature_name": "serving_default", "instances": [sample[0].unit]}
    ok = requests.post(f"{server.url}/v1/models/cnn/versions/{version}:predict", json=body, timeout=TIMEOUT)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    wrong = requests.post(f"{server.url}/v1/models/cnn/versions/999:predict", json=body, timeout=TIMEOUT)
    assert "999" in assert_flat_error(wrong, 404)


def test_tf_serving_answers_match_the_own_api(server, sample: list[Digit]) -> None:
    tf = requests.post(
        f"{server.url}/v1/models/cnn:predict", json={"instances": [sample[2].unit]}, timeout=TIMEOUT
    ).json()["predictions"][0]
    own = requests.post(f"{server.url}/predict", json={"pixels": sample[2].unit}, timeout=TIMEOUT).json()
    np.testing.assert_allclose(tf, own["probabilities"], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"instances": []}, 400),
        ({"instances": "x"}, 400),
        ({"instances": [[[0.1] * 28] * 27]}, 400),
        ({"instances": [[[0.1] * 28] * 28, [0.1] * 784]}, 400),
        ({"instances": [[["x"] * 28] * 28]}, 400),
        ({"instances": [[[999] * 28] * 28]}, 400),
        ({"instances": [{"a": [0.1] * 784, "b": [0.1] * 784}]}, 400),
        ({"inputs": [[[-5] * 28] * 28]}, 400),
    ],
)
def test_bad_requests_are_400_with_a_flat_error(server, body: dict, status: int) -> None:
    r = requests.post(f"{server.url}/v1/models/cnn:predict", json=body, timeout=TIMEOUT)
    assert_flat_error(r, status)


def test_unknown_models_methods_and_verbs(server, sample: list[Digit]) -> None:
    body = {"instances": [sample[0].unit]}
    assert_flat_error(
        requests.post(f"{server.url}/v1/models/resnet:predict", json=body, timeout=TIMEOUT), 404
    )
    assert_flat_error(requests.post(f"{server.url}/v1/models/cnn:classify", json=body, timeout=TIMEOUT), 400)
    assert_flat_error(requests.get(f"{server.url}/v1/models/cnn:predict", timeout=TIMEOUT), 405)
    assert_flat_error(requests.get(f"{server.url}/v1/models/cnn/versions/999", timeout=TIMEOUT), 404)
