"""The generated /openapi.json in process: it states the live models, versions and batch cap, the links the
stateful tests follow, and the one batch cap is what every API enforces."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.fixtures.app import running_app
from tests.service_support import assert_flat_error, assert_own_error
from tests.support.api import Api

CAP = 3


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory):
    """An app whose batch cap is small enough to exceed with a few images."""
    with running_app(tmp_path_factory.mktemp("capped"), max_images_per_request=CAP) as app:
        yield app


def _spec(api: Api) -> dict:
    reply = api.get("/openapi.json")
    assert reply.status_code == 200
    return dict(reply.json())


def test_the_model_enums_come_from_the_registry(capped) -> None:
    spec = _spec(Api(capped.test_client()))
    served = sorted(capped.extensions["mnist"].models.models)
    for path in ("/v1/models/{name}:predict", "/v2/models/{name}/infer"):
        (name,) = [p for p in spec["paths"][path]["post"]["parameters"] if p["name"] == "name"]
        assert name["schema"]["enum"] == served
    predict = {p["name"]: p for p in spec["paths"]["/predict"]["post"]["parameters"]}
    assert predict["model"]["schema"]["enum"] == [*served, ""]


def test_the_batch_cap_is_in_the_spec(capped) -> None:
    text = json.dumps(_spec(Api(capped.test_client())))
    assert f'"maxItems": {CAP}' in text and f'"maximum": {CAP}' in text


def test_every_api_refuses_a_batch_over_the_one_cap(capped) -> None:
    api = Api(capped.test_client())
    image = [[0.5] * 28] * 28
    over = [image] * (CAP + 1)
    assert "at most 3" in assert_own_error(api.post("/predict", json={"pixels": over}), 400)["message"]
    assert "at most 3" in assert_flat_error(api.post("/v1/models/cnn:predict", json={"instances": over}), 400)
    tensor = {"name": "image", "shape": [CAP + 1, 784], "datatype": "FP32", "data": [0.5] * 784 * (CAP + 1)}
    assert "at most 3" in assert_flat_error(api.post("/v2/models/cnn/infer", json={"inputs": [tensor]}), 400)
    at_cap = api.post("/v1/models/cnn:predict", json={"instances": [image] * CAP})
    assert at_cap.status_code == 200 and len(at_cap.json()["predictions"]) == CAP


def test_the_record_operations_are_linked_from_where_ids_appear(capped) -> None:
    paths = _spec(Api(capped.test_client()))["paths"]
    for source in (paths["/predict"]["post"], paths["/api/predictions"]["get"]):
        links = source["responses"]["200"]["links"]
        assert {link["operationId"] for link in links.values()} == {
            "getPrediction",
            "getPredictionImage",
            "giveFeedback",
        }


def test_answers_match_their_documented_schemas(capped) -> None:
    api = Api(capped.test_client())
    spec = _spec(api)
    made = api.predict(pixels=[[0.5] * 28] * 28)
    checks = [
        ("Prediction", made),
        ("Record", api.record(made["id"])),
        ("Page", api.get("/api/predictions").json()),
        ("ModelList", api.get("/api/models").json()),
        ("Readiness", api.get("/readyz").json()),
        ("FeedbackAnswer", api.feedback(made["id"], 3).json()),
    ]
    for name, body in checks:
        schema = spec["components"]["schemas"][name]
        jsonschema.validate(body, {**schema, "components": spec["components"]})
