"""The model lifecycle over real HTTP (gunicorn, 2 workers): every answer names the version that gave it
under a 90/10 canary, versions are addressed by path and query, status and metadata list every version
and the refused ones, the v2 model repository works with the admin token and is refused without it, and
shadow answers are recorded but never returned nor listed in the history.

Version 2 of cnn serves the softmax network, so its probabilities differ from version 1's: a response that
names a version is checked against that version's own answer for the same image.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from service.lifecycle.shadow import shadow_id
from tests.fixtures.server import RunningServer, start_server
from tests.service_support import Digit, digits
from tests.support.model_versions import add_version, answers_like, flip_bytes, model_dir_with
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 30
SPLIT_REQUESTS = 200  # per API; the 2,000-request split figure is tests/test_canary.py's
FOLLOW_S = 30.0  # the other worker applies a repository call at its next poll (MNIST_MODEL_POLL_S=1)


def _model_dir(tmp: Path) -> Path:
    model_dir = model_dir_with(tmp, cnn=1, softmax=1)
    add_version(model_dir, "cnn", 2, damage=answers_like("softmax"))
    add_version(model_dir, "cnn", 3, damage=flip_bytes)  # refused: checksum
    return model_dir


@pytest.fixture(scope="module")
def canary_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """cnn v1 and v2 (90/10) plus a refused v3, softmax v1, the admin token on; shared by the tests below
    (the repository test puts back what it changes)."""
    server = start_server(
        tmp_path_factory.mktemp("canary"),
        {
            "MNIST_MODEL_DIR": str(_model_dir(tmp_path_factory.mktemp("models"))),
            "MNIST_MODEL_VERSION_POLICY": "cnn=all",
            "MNIST_MODEL_ROUTING": "cnn: 1=90, 2=10",
            "MNIST_ROUTING_SEED": "7",
            "MNIST_MODEL_POLL_S": "1",
            "MNIST_ADMIN_TOKEN": TOKEN,
        },
        workers=2,
    )
    yield server
    server.stop()


def _tf(url: str, digit: Digit, path: str = "cnn") -> tuple[str, np.ndarray]:
    r = requests.post(f"{url}/v1/models/{path}:predict", json={"instances": [digit.unit]}, timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.headers["X-Model-Version"], np.array(r.json()["predictions"][0])


def _v2(url: str, digit: Digit, path: str = "cnn") -> tuple[str, np.ndarray]:
    tensor = {
        "name": "image",
        "shape": [1, 28, 28],
        "datatype": "FP32",
        "data": np.ravel(digit.unit).tolist(),
    }
    r = requests.post(f"{url}/v2/models/{path}/infer", json={"inputs": [tensor]}, timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "cnn"
    probabilities = next(o for o in body["outputs"] if o["name"] == "probabilities")
    return body["model_version"], np.array(probabilities["data"])


def _own(url: str, digit: Digit, **params: str) -> tuple[str, np.ndarray, str]:
    r = requests.post(
        f"{url}/predict",
        files={"image": ("d.png", digit.png)},
        params={"model": "cnn", **params},
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["version"], np.array(body["probabilities"]), body["id"]


def test_every_answer_names_the_version_that_gave_it_under_a_90_10_split(
    canary_server: RunningServer, mnist_data_dir: Path
) -> None:
    url = canary_server.url
    sample = digits(mnist_data_dir, 10, start=500)
    # What each version answers for each image, asked by path (TF Serving and v2) and by query (own API).
    reference = {(v, d.index): _tf(url, d, f"cnn/versions/{v}")[1] for v in ("1", "2") for d in sample}
    for d in sample:
        assert not np.allclose(reference[("1", d.index)], reference[("2", d.index)], atol=1e-4)
        for v in ("1", "2"):
            assert _tf(url, d, f"cnn/versions/{v}")[0] == v
            assert _v2(url, d, f"cnn/versions/{v}")[0] == v
            assert np.allclose(_v2(url, d, f"cnn/versions/{v}")[1], reference[(v, d.index)], atol=1e-6)
            version, probabilities, _ = _own(url, d, version=v)
            assert version == v and np.allclose(probabilities, reference[(v, d.index)], atol=1e-6)

    seen: dict[str, collections.Counter[str]] = {}
    for api, ask in (("tfserving", _tf), ("v2", _v2)):
        counts: collections.Counter[str] = collections.Counter()
        for i in range(SPLIT_REQUESTS):
            d = sample[i % len(sample)]
            version, probabilities = ask(url, d)
            assert np.allclose(probabilities, reference[(version, d.index)], atol=1e-6), (api, version)
            counts[version] += 1
        seen[api] = counts
    own: collections.Counter[str] = collections.Counter()
    ids: dict[str, str] = {}
    for i in range(SPLIT_REQUESTS):
        d = sample[i % len(sample)]
        version, probabilities, rid = _own(url, d)
        assert np.allclose(probabilities, reference[(version, d.index)], atol=1e-6)
        own[version] += 1
        ids[rid] = version
    seen["own"] = own
    print(f"\nversions that answered, 90/10 canary, {SPLIT_REQUESTS} requests per API: {seen}")
    for api, counts in seen.items():
        assert set(counts) == {"1", "2"}, (api, counts)
        assert 0.03 <= counts["2"] / SPLIT_REQUESTS <= 0.2, (api, counts)
    # The record of each answer names the same version.
    for rid, version in list(ids.items())[:20]:
        rec = wait_until(lambda rid=rid: _record(url, rid), 10, f"record {rid}")
        assert rec["version"] == version


def test_status_and_metadata_list_every_version_and_the_refused_one_never_a_canary_draw(
    canary_server: RunningServer,
) -> None:
    url = canary_server.url
    statuses = {
        requests.get(f"{url}/v1/models/cnn", timeout=TIMEOUT_S).text for _ in range(20)
    }  # the same answer each time: no random pick
    assert len(statuses) == 1
    rows = {
        row["version"]: row
        for row in requests.get(f"{url}/v1/models/cnn", timeout=TIMEOUT_S).json()["model_version_status"]
    }
    assert [rows[v]["state"] for v in ("1", "2", "3")] == ["AVAILABLE", "AVAILABLE", "END"]
    assert rows["3"]["status"]["error_code"] == "FAILED_PRECONDITION"
    assert rows["3"]["status"]["error_message"].startswith("checksum")
    one = requests.get(f"{url}/v1/models/cnn/versions/2", timeout=TIMEOUT_S).json()
    assert [r["version"] for r in one["model_version_status"]] == ["2"]
    assert requests.get(f"{url}/v1/models/cnn/versions/9", timeout=TIMEOUT_S).status_code == 404

    tf_meta = {
        requests.get(f"{url}/v1/models/cnn/metadata", timeout=TIMEOUT_S).json()["model_spec"]["version"]
        for _ in range(20)
    }
    assert tf_meta == {"2"}  # the highest loaded version, every time
    metadata = [requests.get(f"{url}/v2/models/cnn", timeout=TIMEOUT_S).json() for _ in range(20)]
    # Each worker checked version 3 itself, so only the time of its own attempt (`at`) may differ.
    untimed = [[{k: v for k, v in f.items() if k != "at"} for f in m["failures"]] for m in metadata]
    same = [{**m, "failures": failures} for m, failures in zip(metadata, untimed, strict=True)]
    assert all(m == same[0] for m in same)
    assert metadata[0]["versions"] == ["2", "1"]
    assert [(f["version"], f["reason"]) for f in metadata[0]["failures"]] == [("3", "checksum")]
    assert requests.get(f"{url}/v2/models/cnn/versions/1", timeout=TIMEOUT_S).json()["versions"] == ["1"]
    assert requests.get(f"{url}/v2/models/softmax", timeout=TIMEOUT_S).json()["failures"] == []

    ready = requests.get(f"{url}/readyz", timeout=TIMEOUT_S)
    assert ready.status_code == 200, ready.text  # a refused version does not make the worker unready
    models = ready.json()["models"]
    assert {(m["name"], m["version"]) for m in models["served"]} == {
        ("cnn", "1"),
        ("cnn", "2"),
        ("softmax", "1"),
    }
    assert [(f["model"], f["version"], f["reason"]) for f in models["failures"]] == [("cnn", "3", "checksum")]


def test_the_model_repository_needs_the_token_and_pins_unloads_and_restores(
    canary_server: RunningServer,
) -> None:
    url = canary_server.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for path in ("index", "models/cnn/load", "models/softmax/unload"):
            r = requests.post(f"{url}/v2/repository/{path}", headers=headers, timeout=TIMEOUT_S)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in r.json()

    index = _admin(url, "index")
    assert {(e["name"], e["version"], e["state"]) for e in index} == {
        ("cnn", "1", "READY"),
        ("cnn", "2", "READY"),
        ("cnn", "3", "UNAVAILABLE"),
        ("softmax", "1", "READY"),
    }
    assert next(e for e in index if e["version"] == "3")["reason"].startswith("checksum")
    assert {e["version"] for e in _admin(url, "index", {"ready": True}) if e["name"] == "cnn"} == {"1", "2"}

    # Pin cnn to version 1: this worker at once, the other by its next poll; the canary then only has v1.
    pinned = _admin(url, "models/cnn/load", {"parameters": {"versions": ["1"]}})
    assert [r["version"] for r in pinned["model_version_status"] if r["state"] == "AVAILABLE"] == ["1"]
    # 200 requests: under the 90/10 weights a worker still serving v2 shows it in 40 with only ~98% odds.
    wait_until(lambda: _versions_answering(url, 200) == {"1"}, FOLLOW_S, "every worker to answer cnn v1 only")
    # A pin to the refused version is refused and undone; unknown names and versions are 404s.
    _admin(url, "models/cnn/load", {"parameters": {"versions": ["3"]}}, status=409)
    _admin(url, "models/cnn/load", {"parameters": {"versions": ["8"]}}, status=404)
    _admin(url, "models/nope/load", status=404)
    _admin(url, "models/cnn/load", {"parameters": {"versions": "1"}}, status=400)
    assert _versions_answering(url, 200) == {"1"}
    # Back to the policy (all): both versions answer again.
    _admin(url, "models/cnn/load")
    wait_until(lambda: _versions_answering(url) == {"1", "2"}, FOLLOW_S, "cnn v1 and v2 to answer again")

    # Unload softmax everywhere, then load it back; the default model stays.
    assert _admin(url, "models/softmax/unload") == {"name": "softmax", "unloaded": True}
    wait_until(lambda: _softmax_statuses(url) == {404}, FOLLOW_S, "softmax to be gone from every worker")
    assert {(e["name"], e["state"]) for e in _admin(url, "index") if e["name"] == "softmax"} == {
        ("softmax", "UNAVAILABLE")
    }
    _admin(url, "models/cnn/unload", status=409)
    _admin(url, "models/softmax/load")
    wait_until(lambda: _softmax_statuses(url) == {200}, FOLLOW_S, "softmax to serve in every worker again")


def test_shadow_answers_are_recorded_never_returned_and_not_in_the_history(
    server_factory: Callable[..., RunningServer], tmp_path: Path, mnist_data_dir: Path
) -> None:
    model_dir = model_dir_with(tmp_path, cnn=1)
    add_version(model_dir, "cnn", 2, damage=answers_like("softmax"))
    server = server_factory(
        {
            "MNIST_MODEL_DIR": str(model_dir),
            "MNIST_MODEL_VERSION_POLICY": "cnn=all",
            "MNIST_MODEL_SHADOW": "cnn: 1",  # version 2 (the highest) answers, version 1 shadows it
        },
        workers=2,
    )
    url = server.url
    sample = digits(mnist_data_dir, 12, start=700)
    primary: dict[str, dict[str, Any]] = {}
    for d in sample[:6]:
        version, probabilities, rid = _own(url, d)
        assert version == "2"
        primary[rid] = {"digit": int(np.argmax(probabilities)), "pixels": d}
    # A batch of several images in one request: each gets its own shadow record, in order.
    batch = requests.post(
        f"{url}/predict",
        json=[{"pixels": d.unit} for d in sample[6:]],
        params={"model": "cnn"},
        timeout=TIMEOUT_S,
    )
    assert batch.status_code == 200, batch.text
    assert [a["version"] for a in batch.json()] == ["2"] * 6
    primary.update({a["id"]: {"digit": a["digit"]} for a in batch.json()})
    # v2 and TF Serving answers are shadowed too, and still name the primary version.
    assert _v2(url, sample[0])[0] == "2" and _tf(url, sample[0])[0] == "2"

    for rid, answer in primary.items():
        shadow = wait_until(
            lambda rid=rid: _record(url, str(shadow_id(uuid.UUID(rid), "1"))), 10, f"shadow of {rid}"
        )
        assert shadow["model"] == "cnn" and shadow["version"] == "1"
        extra = shadow["extra"]
        assert extra["shadow"] is True and extra["primary_id"] == rid and extra["primary_version"] == "2"
        assert extra["primary_digit"] == answer["digit"]
        assert _record(url, rid)["version"] == "2"

    history = requests.get(f"{url}/api/predictions", params={"limit": 500}, timeout=TIMEOUT_S).json()
    listed = [r["id"] for r in history["predictions"]]
    assert set(primary) <= set(listed)
    assert all(r["version"] == "2" for r in history["predictions"])  # no shadow record among them
    assert len(listed) == len(primary) + 2  # the v2 and TF Serving requests
    small_pages = _all_pages(url, limit=3)  # paging over interleaved shadow rows skips them, no gaps
    assert small_pages == listed
    wait_until(lambda: _listed_with_shadows(url) == 2 * len(listed), 10, "every shadow record in the store")
    wait_until(lambda: _shadow_counted(url) == len(listed), 10, "every shadow answer counted")
    # Without MNIST_ADMIN_TOKEN the model repository is off, and says how to turn it on: 403 to a caller with
    # a token, 401 (credentials missing) to one without.
    for path in ("index", "models/cnn/load", "models/cnn/unload"):
        r = requests.post(f"{url}/v2/repository/{path}", headers=ADMIN, timeout=TIMEOUT_S)
        assert r.status_code == 403, r.text
        assert "set MNIST_ADMIN_TOKEN" in r.json()["error"]
        bare = requests.post(f"{url}/v2/repository/{path}", timeout=TIMEOUT_S)
        assert bare.status_code == 401, bare.text
        assert "MNIST_ADMIN_TOKEN is not set" in bare.json()["error"]
    assert _versions_answering(url) == {"2"}  # nothing was unloaded


def _admin(url: str, path: str, body: Any = None, status: int = 200) -> Any:
    r = requests.post(f"{url}/v2/repository/{path}", json=body, headers=ADMIN, timeout=TIMEOUT_S)
    assert r.status_code == status, (path, body, r.text)
    return r.json()


def _versions_answering(url: str, requests_: int = 40) -> set[str]:
    """The cnn versions that answer `requests_` requests naming no version (spread over both workers)."""
    ones = [[0.0] * 28 for _ in range(28)]
    ones[14] = [1.0] * 28
    answers = set()
    for _ in range(requests_):
        r = requests.post(f"{url}/v1/models/cnn:predict", json={"instances": [ones]}, timeout=TIMEOUT_S)
        assert r.status_code == 200, r.text
        answers.add(r.headers["X-Model-Version"])
    return answers


def _softmax_statuses(url: str, requests_: int = 20) -> set[int]:
    return {
        requests.get(f"{url}/v2/models/softmax/ready", timeout=TIMEOUT_S).status_code
        for _ in range(requests_)
    }


def _listed_with_shadows(url: str) -> int:
    params = {"limit": 500, "shadow": "1"}
    return len(requests.get(f"{url}/api/predictions", params=params, timeout=TIMEOUT_S).json()["predictions"])


def _shadow_counted(url: str) -> float:
    """mnist_shadow_predictions_total summed over its labels (agreement yes/no), across the workers."""
    lines = requests.get(f"{url}/metrics", timeout=TIMEOUT_S).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("mnist_shadow_predictions_total{")
    )


def _record(url: str, rid: str) -> dict[str, Any] | None:
    r = requests.get(f"{url}/api/predictions/{rid}", timeout=TIMEOUT_S)
    return r.json() if r.status_code == 200 else None


def _all_pages(url: str, limit: int) -> list[str]:
    ids: list[str] = []
    before = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit, **({"before": before} if before else {})}
        page = requests.get(f"{url}/api/predictions", params=params, timeout=TIMEOUT_S).json()
        ids += [r["id"] for r in page["predictions"]]
        before = page["next_before"]
        if before is None:
            return ids
    raise AssertionError("more than 100 pages")
