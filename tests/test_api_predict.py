"""The own API over real HTTP: predict in every input form, history, records, feedback, export, OpenAPI."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
from flask import Flask

from tests.fixtures.server import MODEL_DIR
from tests.service_support import Digit, assert_own_error, digits, openapi_schema
from tests.support.api import Api

pytestmark = pytest.mark.integration
TIMEOUT = 30


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 12)


def _served_models() -> dict[str, dict]:
    found = {}
    for meta in MODEL_DIR.glob("*/*/metadata.json"):
        doc = json.loads(meta.read_text())
        if doc["name"] not in found or int(doc["version"]) > int(found[doc["name"]]["version"]):
            found[doc["name"]] = doc
    return found


def _accuracy_ok(results: list[dict], labels: list[int]) -> None:
    right = sum(r["digit"] == label for r, label in zip(results, labels, strict=True))
    assert right >= len(labels) - 1, [(r["digit"], label) for r, label in zip(results, labels, strict=True)]


def test_a_png_upload_is_answered_with_the_documented_fields(server, sample: list[Digit]) -> None:
    schema = openapi_schema(server.url, "Prediction")
    results = []
    for digit in sample:
        r = requests.post(f"{server.url}/predict", files={"image": ("d.png", digit.png)}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        body = r.json()
        jsonschema.validate(body, schema)
        assert body["model"] == "cnn" and body["version"] == _served_models()["cnn"]["version"]
        assert abs(sum(body["probabilities"]) - 1) < 1e-3
        assert body["confidence"] == max(body["probabilities"])
        assert body["digit"] == int(np.argmax(body["probabilities"]))
        uuid.UUID(body["id"])
        results.append(body)
    _accuracy_ok(results, [d.label for d in sample])


def test_older_clients_field_name_file_is_accepted(server, sample: list[Digit]) -> None:
    r = requests.post(f"{server.url}/predict", files={"file": ("d.png", sample[0].png)}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == sample[0].label


@pytest.mark.parametrize("name", ["softmax", "cnn"])
def test_each_shipped_model_is_served_by_name(server, sample: list[Digit], name: str) -> None:
    api = Api(server.url)
    results = [api.predict(d.png, model=name) for d in sample]
    assert {r["model"] for r in results} == {name}
    assert {r["version"] for r in results} == {_served_models()[name]["version"]}
    _accuracy_ok(results, [d.label for d in sample])


def test_the_model_can_be_named_in_the_form_or_json(server, sample: list[Digit]) -> None:
    form = requests.post(
        f"{server.url}/predict", data={"model": "softmax"}, files={"image": sample[0].png}, timeout=TIMEOUT
    )
    body = requests.post(
        f"{server.url}/predict", json={"pixels": sample[0].unit, "model": "softmax"}, timeout=TIMEOUT
    )
    assert form.json()["model"] == body.json()["model"] == "softmax"


def test_models_are_listed_with_version_and_accuracy_from_metadata(server) -> None:
    body = requests.get(f"{server.url}/api/models", timeout=TIMEOUT).json()
    listed = {m["name"]: m for m in body["models"]}
    on_disk = _served_models()
    assert set(listed) == set(on_disk)
    for name, meta in on_disk.items():
        assert listed[name]["version"] == meta["version"]
        assert listed[name]["accuracy"] == pytest.approx(meta["test_accuracy"])
    assert body["default"] == "cnn"


def test_json_base64_and_data_urls_are_accepted(server, sample: list[Digit]) -> None:
    encoded = base64.b64encode(sample[1].png).decode()
    plain = requests.post(f"{server.url}/predict", json={"image": encoded}, timeout=TIMEOUT).json()
    data_url = requests.post(
        f"{server.url}/predict", json={"image": f"data:image/png;base64,{encoded}"}, timeout=TIMEOUT
    ).json()
    assert plain["digit"] == data_url["digit"] == sample[1].label
    assert plain["probabilities"] == data_url["probabilities"]


def test_a_raw_image_body_is_accepted(server, sample: list[Digit]) -> None:
    r = requests.post(
        f"{server.url}/predict", data=sample[2].png, headers={"Content-Type": "image/png"}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == sample[2].label


def test_pixels_in_0_1_and_0_255_mean_the_same(server, sample: list[Digit]) -> None:
    unit = requests.post(f"{server.url}/predict", json={"pixels": sample[3].unit}, timeout=TIMEOUT).json()
    byte = requests.post(
        f"{server.url}/predict", json={"pixels": sample[3].pixels.tolist()}, timeout=TIMEOUT
    ).json()
    flat = requests.post(
        f"{server.url}/predict", json={"pixels": sample[3].pixels.reshape(-1).tolist()}, timeout=TIMEOUT
    ).json()
    assert unit["digit"] == byte["digit"] == flat["digit"] == sample[3].label
    np.testing.assert_allclose(unit["probabilities"], byte["probabilities"], atol=1e-5)
    np.testing.assert_allclose(unit["probabilities"], flat["probabilities"], atol=1e-5)


def test_several_images_give_a_list_in_request_order(server, sample: list[Digit]) -> None:
    files = [("image", (f"{i}.png", d.png)) for i, d in enumerate(sample)]
    multipart = requests.post(f"{server.url}/predict", files=files, timeout=TIMEOUT).json()
    json_list = requests.post(
        f"{server.url}/predict", json=[{"pixels": d.unit} for d in sample], timeout=TIMEOUT
    ).json()
    base64_list = requests.post(
        f"{server.url}/predict",
        json={"image": [base64.b64encode(d.png).decode() for d in sample]},
        timeout=TIMEOUT,
    ).json()
    pixel_batch = requests.post(
        f"{server.url}/predict", json={"pixels": [d.unit for d in sample]}, timeout=TIMEOUT
    ).json()
    for results in (multipart, json_list, base64_list, pixel_batch):
        assert isinstance(results, list) and len(results) == len(sample)
        assert len({r["id"] for r in results}) == len(sample)
        _accuracy_ok(results, [d.label for d in sample])
    # The same image, alone or in a list, gets the same answer.
    single = requests.post(f"{server.url}/predict", files={"image": sample[5].png}, timeout=TIMEOUT).json()
    np.testing.assert_allclose(single["probabilities"], multipart[5]["probabilities"], atol=1e-5)


def test_include_input_returns_the_28x28_image_the_model_saw(server, sample: list[Digit]) -> None:
    body = requests.post(
        f"{server.url}/predict",
        params={"include_input": "1"},
        json={"pixels": sample[4].unit},
        timeout=TIMEOUT,
    ).json()
    seen = np.array(body["input"])
    assert seen.shape == (28, 28)
    np.testing.assert_allclose(seen, sample[4].pixels / 255.0, atol=1e-4)
    without = requests.post(f"{server.url}/predict", json={"pixels": sample[4].unit}, timeout=TIMEOUT).json()
    assert "input" not in without


def test_a_record_keeps_the_normalized_input_and_the_original_upload(server, sample: list[Digit]) -> None:
    png = sample[6].png
    made = requests.post(
        f"{server.url}/predict",
        files={"image": ("six.png", png, "image/png")},
        headers={"X-Request-ID": "record-test-1"},
        timeout=TIMEOUT,
    ).json()
    detail = requests.get(f"{server.url}/api/predictions/{made['id']}", timeout=TIMEOUT)
    assert detail.status_code == 200, detail.text
    rec = detail.json()
    jsonschema.validate(rec, openapi_schema(server.url, "Record"))
    assert rec["id"] == made["id"] and rec["digit"] == made["digit"] and rec["model"] == made["model"]
    assert rec["request_id"] == "record-test-1"
    assert rec["client"] == "127.0.0.1"
    assert rec["label"] is None
    assert np.array(rec["pixels"]).shape == (28, 28)
    assert base64.b64decode(rec["image"]) == png and rec["image_type"] == "image/png"
    original = requests.get(f"{server.url}{rec['image_url']}", timeout=TIMEOUT)
    assert original.content == png and original.headers["Content-Type"] == "image/png"


def test_history_is_newest_first_filtered_and_paged_without_gaps(server_factory, sample: list[Digit]) -> None:
    server = server_factory()
    made = []
    for d in sample:
        for model in ("cnn", "softmax"):
            made.append(
                requests.post(
                    f"{server.url}/predict", json={"pixels": d.unit, "model": model}, timeout=TIMEOUT
                ).json()
            )
    seen: list[dict] = []
    before = None
    pages = 0
    while True:
        params = {"limit": 5, **({"before": before} if before else {})}
        page = requests.get(f"{server.url}/api/predictions", params=params, timeout=TIMEOUT).json()
        jsonschema.validate(page, openapi_schema(server.url, "Page"))
        seen += page["predictions"]
        pages += 1
        before = page["next_before"]
        if before is None:
            break
    assert [r["id"] for r in seen] == [m["id"] for m in reversed(made)]
    assert pages == -(-len(made) // 5) or pages == len(made) // 5 + 1
    created = [r["created"] for r in seen]
    assert created == sorted(created, reverse=True)

    digit = sample[0].label
    only = requests.get(
        f"{server.url}/api/predictions", params={"digit": digit, "model": "softmax"}, timeout=TIMEOUT
    ).json()["predictions"]
    expected = [m["id"] for m in reversed(made) if m["digit"] == digit and m["model"] == "softmax"]
    assert [r["id"] for r in only] == expected and expected


def test_feedback_is_stored_and_exported_for_retraining(server_factory, sample: list[Digit]) -> None:
    server = server_factory()
    made = [
        requests.post(f"{server.url}/predict", json={"pixels": d.unit}, timeout=TIMEOUT).json()
        for d in sample
    ]
    labelled = {m["id"]: d for m, d in zip(made[:5], sample[:5], strict=True)}
    for rid, d in labelled.items():
        r = requests.post(
            f"{server.url}/api/predictions/{rid}/feedback", json={"label": d.label}, timeout=TIMEOUT
        )
        assert r.status_code == 200, r.text
        assert r.json()["label"] == d.label
    assert requests.get(f"{server.url}/api/predictions/{made[0]['id']}", timeout=TIMEOUT).json()["label"] == (
        sample[0].label
    )

    npz = requests.get(f"{server.url}/api/feedback/export", params={"format": "npz"}, timeout=TIMEOUT)
    assert npz.status_code == 200
    with np.load(io.BytesIO(npz.content)) as data:
        assert data["images"].shape == (5, 28, 28) and data["images"].dtype == np.uint8
        by_id = dict(zip(data["ids"].tolist(), range(5), strict=True))
        assert set(by_id) == set(labelled)
        for rid, d in labelled.items():
            i = by_id[rid]
            assert data["labels"][i] == d.label
            np.testing.assert_array_equal(data["images"][i], d.pixels)

    text = requests.get(f"{server.url}/api/feedback/export", params={"format": "csv"}, timeout=TIMEOUT).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["id"] for row in rows} == set(labelled)
    for row in rows:
        d = labelled[row["id"]]
        assert int(row["label"]) == d.label
        pixels = np.array([int(row[f"pixel{i}"]) for i in range(784)], dtype=np.uint8).reshape(28, 28)
        np.testing.assert_array_equal(pixels, d.pixels)


def test_feedback_right_after_the_prediction_finds_the_record(server, sample: list[Digit]) -> None:
    # The record may still be in a write-behind queue (of this worker or another): it must still be found.
    for d in sample[:6]:
        made = requests.post(f"{server.url}/predict", json={"pixels": d.unit}, timeout=TIMEOUT).json()
        r = requests.post(
            f"{server.url}/api/predictions/{made['id']}/feedback", json={"label": d.label}, timeout=TIMEOUT
        )
        assert r.status_code == 200, r.text
        assert r.json()["agree"] == (made["digit"] == d.label)


@pytest.mark.parametrize("label", [10, -1, "7", 3.5, True, None])
def test_feedback_label_must_be_a_digit(server, sample: list[Digit], label: object) -> None:
    made = requests.post(f"{server.url}/predict", json={"pixels": sample[0].unit}, timeout=TIMEOUT).json()
    r = requests.post(
        f"{server.url}/api/predictions/{made['id']}/feedback", json={"label": label}, timeout=TIMEOUT
    )
    assert_own_error(r, 400, "bad_input")


def test_request_ids_are_honoured_returned_and_logged(server, sample: list[Digit]) -> None:
    r = requests.post(
        f"{server.url}/predict",
        json={"pixels": sample[7].unit},
        headers={"X-Request-ID": "trace-abc-123"},
        timeout=TIMEOUT,
    )
    assert r.headers["X-Request-ID"] == "trace-abc-123"
    fresh = requests.get(f"{server.url}/healthz", timeout=TIMEOUT).headers["X-Request-ID"]
    assert fresh and fresh != "trace-abc-123"
    lines = [json.loads(line) for line in server.logs().splitlines() if "trace-abc-123" in line]
    access = [line for line in lines if line.get("route") == "/predict"]
    assert access, lines
    line = access[-1]
    assert line["status"] == 200 and line["method"] == "POST"
    assert line["model"] == "cnn" and line["digit"] == r.json()["digit"]
    assert line["latency_ms"] > 0


def test_openapi_describes_every_route(server, app: Flask) -> None:
    spec = requests.get(f"{server.url}/openapi.json", timeout=TIMEOUT).json()
    assert spec["openapi"].startswith("3.")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    # TF Serving's `:classify`/`:regress` answer "unsupported"; they are not part of the documented API.
    routes = {p: m for p, m in routes.items() if ":{verb}" not in p}
    documented = {path: set(ops) for path, ops in spec["paths"].items()}
    assert documented == routes


@pytest.mark.parametrize(
    "before",
    [
        "2252-07-12 13:12,7ec44723-CB3F-9E00-Bac5-8AA7Dcdd18eA",  # date, space, time
        "2024-05-01T10:00:00 01:00",  # "+01:00" whose "+" the query string turned into a space
        "2024-05-01 10:00 01:00,7ec44723-cb3f-9e00-bac5-8aa7dcdd18ea",
    ],
)
def test_a_time_with_a_space_is_a_valid_cursor(server, before: str) -> None:
    r = requests.get(f"{server.url}/api/predictions", params={"before": before}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
