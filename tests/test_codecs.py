"""The protocol codecs as plain functions: bytes or JSON in, float32 [n, 28, 28] out, and answers back,
with no app, no Flask and no model (what a gRPC front end will call the same way)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from service.codecs import own, tfserving, v2
from service.codecs.body import Limits, read_json
from service.errors import BadInput
from service.types.batch import Inference

LIMITS = Limits(max_images=4, max_upload_bytes=5_000_000, max_image_pixels=25_000_000)
IMAGE = np.linspace(0, 255, 784, dtype=np.float32).reshape(28, 28)


def _result(n: int) -> Inference:
    probabilities = np.full((n, 10), 0.05, dtype=np.float32)
    probabilities[:, 3] = 0.55
    return Inference(
        "cnn",
        "1",
        np.zeros((n, 28, 28), np.float32),
        probabilities,
        probabilities.argmax(axis=1),
        probabilities.max(axis=1),
        [uuid.uuid4() for _ in range(n)],
        1.5,
    )


def test_one_reader_names_what_is_wrong_with_a_body() -> None:
    assert read_json(b'{"a": 1}', what="the body", empty="send something") == {"a": 1}
    with pytest.raises(BadInput, match="send something"):
        read_json(b"  ", what="the body", empty="send something")
    with pytest.raises(BadInput, match="the body is not valid JSON"):
        read_json(b"{", what="the body", empty="send something")


def test_own_pixels_in_0_255_become_the_models_0_1_input() -> None:
    request = own.decode_json({"pixels": IMAGE.tolist(), "model": "softmax"}, LIMITS)
    assert request.images.shape == (1, 28, 28) and request.images.dtype == np.float32
    np.testing.assert_allclose(request.images[0], IMAGE / 255, atol=1e-6)
    assert request.model == "softmax" and request.named == ("softmax",) and not request.many


def test_own_json_refuses_unknown_fields_and_batches_over_the_cap() -> None:
    with pytest.raises(BadInput, match="unknown field"):
        own.decode_json({"pixels": IMAGE.tolist(), "label": 3}, LIMITS)
    with pytest.raises(BadInput, match="at most 4 images"):
        own.decode_json([{"pixels": IMAGE.tolist()}] * 5, LIMITS)


def test_own_answers_are_one_object_or_a_list() -> None:
    one = json.loads(own.encode(_result(1), many=False))
    assert one["digit"] == 3 and one["confidence"] == 0.55 and "input" not in one
    many = json.loads(own.encode(_result(2), many=True, include_input=True))
    assert [p["digit"] for p in many] == [3, 3] and np.array(many[0]["input"]).shape == (28, 28)


def test_tf_serving_row_and_columnar_forms() -> None:
    rows = tfserving.decode(json.dumps({"instances": [IMAGE.tolist()] * 2}).encode(), LIMITS)
    columns = tfserving.decode(json.dumps({"inputs": {"image": IMAGE.tolist()}}).encode(), LIMITS)
    assert rows.images.shape == (2, 28, 28) and not rows.columnar
    assert columns.images.shape == (1, 28, 28) and columns.columnar
    assert set(json.loads(tfserving.encode(_result(2), columnar=False))) == {"predictions"}
    with pytest.raises(BadInput, match="not both"):
        tfserving.decode(
            json.dumps({"instances": [IMAGE.tolist()], "inputs": [IMAGE.tolist()]}).encode(), LIMITS
        )


def test_v2_binary_tensor_data_in_and_out() -> None:
    pixels = IMAGE.astype(np.uint8)[np.newaxis]
    tensor = {
        "name": "image",
        "shape": [1, 28, 28],
        "datatype": "UINT8",
        "parameters": {"binary_data_size": 784},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    request = v2.decode(header + pixels.tobytes(), str(len(header)), LIMITS)
    np.testing.assert_allclose(request.images, pixels / np.float32(255), atol=1e-6)
    body, length = v2.encode(_result(1), request)
    assert length is not None
    answer = json.loads(body[:length])
    assert [o["name"] for o in answer["outputs"]] == ["probabilities", "digit"]
    probabilities = np.frombuffer(body[length : length + 40], dtype="<f4")
    digit = np.frombuffer(body[length + 40 :], dtype="<i8")
    assert probabilities.argmax() == 3 and digit.tolist() == [3]
