"""Bad input never gets a 500: each mistake gets its status and a JSON error that says what was wrong.

In process (Flask's test client through the `api` fixture): these are validation and error-shape tests.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from service.settings import Settings
from tests.fixtures.app import running_app
from tests.service_support import Digit, assert_flat_error, assert_own_error, digits, png_bytes
from tests.support.api import Api

MAX_UPLOAD = Settings().max_upload_bytes


@pytest.fixture
def app(module_app: Flask) -> Flask:
    """These tests only read what they send: one app serves the module."""
    return module_app


@pytest.fixture(scope="module")
def png(mnist_data_dir: Path) -> bytes:
    return digits(mnist_data_dir, 1)[0].png


@pytest.fixture(scope="module")
def digit(mnist_data_dir: Path) -> Digit:
    return digits(mnist_data_dir, 1)[0]


def test_an_empty_body_is_a_400(api: Api) -> None:
    for headers in ({}, {"Content-Type": "application/json"}, {"Content-Type": "image/png"}):
        assert_own_error(api.post("/predict", headers=headers), 400)


def test_a_form_without_an_image_field_is_a_400(api: Api, png: bytes) -> None:
    r = api.post("/predict", files={"picture": png})
    assert "image" in assert_own_error(r, 400, "bad_input")["message"]


def test_an_empty_upload_is_a_400(api: Api) -> None:
    assert_own_error(api.post("/predict", files={"image": b""}), 400)


def test_bytes_that_are_not_an_image_are_a_400(api: Api) -> None:
    r = api.post(
        "/predict",
        files={"image": b"this is not a picture" * 10},
    )
    assert_own_error(r, 400, "bad_image")


def test_a_truncated_image_is_a_400(api: Api, png: bytes) -> None:
    r = api.post("/predict", files={"image": png[: len(png) // 2]})
    assert_own_error(r, 400, "bad_image")


def test_a_blank_image_is_a_400_saying_no_digit(api: Api) -> None:
    r = api.post(
        "/predict",
        files={"image": png_bytes(np.zeros((28, 28), np.uint8))},
    )
    assert_own_error(r, 400, "no_digit_found")


def test_a_body_over_the_byte_limit_is_a_413(api: Api) -> None:
    r = api.post(
        "/predict",
        files={"image": b"\0" * (MAX_UPLOAD + 1)},
    )
    assert_own_error(r, 413, "too_large")
    assert api.get("/healthz").status_code == 200


def test_an_image_over_the_pixel_limit_is_a_413(api: Api) -> None:
    # 6000 x 5000 = 30 Mpx decodes past the 25 Mpx default, though the PNG itself is small.
    huge = png_bytes(np.zeros((5000, 6000), np.uint8))
    assert len(huge) < MAX_UPLOAD
    assert_own_error(api.post("/predict", files={"image": huge}), 413)


def test_invalid_base64_is_a_400(api: Api) -> None:
    r = api.post("/predict", json={"image": "not base64 !!!"})
    assert_own_error(r, 400, "bad_image")


def _pixels(value: object) -> str:
    return json.dumps({"pixels": value})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('"just a string"', "expected an object"),
        ("{}", '"image"'),
        ("[]", "empty list"),
        (_pixels([[0.5] * 28] * 27), "shape"),
        (_pixels([[0.5] * 27] * 28), "shape"),
        (_pixels([0.5] * 783), "shape"),
        (_pixels([[0.5] * 28] * 27 + [[0.5] * 27]), "rectangular"),
        (_pixels([["a"] * 28] * 28), "number"),
        (_pixels([[True] * 28] * 28), "number"),
        (_pixels([[None] * 28] * 28), "number"),
        (_pixels("pixels"), "numbers"),
        (_pixels([[300] * 28] * 28), "0..255"),
        (_pixels([[-1] * 28] * 28), "0..1 or 0..255"),
        ('{"pixels": [' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]}", "finite"),
        ('{"pixels": [' + ",".join(["[" + ",".join(["Infinity"] * 28) + "]"] * 28) + "]}", "finite"),
        (_pixels([[10**30] * 28] * 28), "number"),
        (json.dumps({"pixels": [[0.5] * 28] * 28, "model": 3}), "model"),
        ('{"image": []}', "no images"),
        ('{"pixels": []}', "no images"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"pixels": ' + "[" * 900 + "0" + "]" * 900 + "}", "rectangular"),
    ],
)
def test_wrong_json_is_a_400_that_names_the_problem(api: Api, body: str, fragment: str) -> None:
    r = api.post(
        "/predict",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert fragment in assert_own_error(r, 400)["message"]


def test_an_unknown_model_is_a_404(api: Api, digit: Digit) -> None:
    r = api.post("/predict?model=resnet", json={"pixels": digit.unit})
    assert "resnet" in assert_own_error(r, 404, "unknown_model")["message"]


@pytest.mark.parametrize("record_id", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_an_unknown_record_is_a_404(api: Api, record_id: str) -> None:
    assert_own_error(api.get(f"/api/predictions/{record_id}"), 404)
    r = api.post(
        f"/api/predictions/{record_id}/feedback",
        json={"label": 1},
    )
    assert_own_error(r, 404)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=100000", "limit=ten", "digit=10", "digit=x", "before=yesterday"]
)
def test_bad_history_queries_are_a_400(api: Api, query: str) -> None:
    assert_own_error(api.get(f"/api/predictions?{query}"), 400, "bad_input")


def test_an_unknown_export_format_is_a_400(api: Api) -> None:
    r = api.get("/api/feedback/export?format=xlsx")
    assert_own_error(r, 400, "bad_input")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/predict"), ("PUT", "/predict"), ("DELETE", "/api/predictions"), ("POST", "/healthz")],
)
def test_a_wrong_method_is_a_405_with_allow(api: Api, method: str, path: str) -> None:
    r = api.request(method, path)
    assert_own_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"]


def test_an_unknown_route_is_a_json_404(api: Api) -> None:
    assert_own_error(api.get("/no/such/page"), 404, "not_found")


def test_tf_serving_and_v2_errors_have_their_flat_shape(api: Api) -> None:
    assert_flat_error(api.get("/v1/models/resnet"), 404)
    assert_flat_error(api.post("/v1/models/cnn:predict", data="{"), 400)
    assert_flat_error(api.get("/v2/models/resnet"), 404)
    assert_flat_error(api.post("/v2/models/cnn/infer", json={}), 400)
    assert_flat_error(api.get("/v2/models/cnn/infer"), 405)


def test_an_unexpected_exception_is_a_500_without_a_stack_trace(tmp_path: Path, caplog) -> None:
    """The error handler itself, in process: a route that fails in a way no input check foresaw."""
    with running_app(tmp_path) as app:

        @app.get("/explode")
        def explode() -> str:
            raise RuntimeError("secret internals")

        with caplog.at_level(logging.ERROR):
            r = app.test_client().get("/explode", headers={"X-Request-ID": "boom-1"})
        assert r.status_code == 500
        body = r.get_json()
        assert body["error"]["code"] == "internal"
        assert "boom-1" in body["error"]["message"]
        assert "secret internals" not in r.get_data(as_text=True)
        assert "Traceback" not in r.get_data(as_text=True)
        failures = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "boom-1"]
        assert any(rec.exc_info for rec in failures)
