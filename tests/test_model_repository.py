"""The model repository (index, load, unload) at the registry: two registries on one model directory and
one overrides file stand for two gunicorn workers, so a call answered by one reaches the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import UnknownModel
from service.inference import ModelRegistry, RepositoryConflict
from service.settings import Settings
from tests.support.model_versions import add_version, model_dir_with, truncate


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[ModelRegistry, ModelRegistry]]:
    model_dir = model_dir_with(tmp_path, softmax=1, cnn=1)
    add_version(model_dir, "softmax", 2)
    settings = Settings(
        model_dir=model_dir, default_model="cnn", model_poll_s=0,
        model_overrides_file=tmp_path / "overrides.json",
    )  # fmt: skip
    pair = ModelRegistry.load(settings), ModelRegistry.load(settings)
    yield pair
    for registry in pair:
        registry.close()


def _served(registry: ModelRegistry, name: str) -> set[str]:
    return set(registry.versions(name))


def test_unload_takes_a_model_out_of_every_worker_and_load_brings_it_back(workers) -> None:
    one, two = workers
    one.unload_model("softmax")
    assert not _served(one, "softmax")
    two.refresh()  # the other worker's next poll
    assert not _served(two, "softmax")
    with pytest.raises(UnknownModel):
        two.get("softmax")
    assert {r["version"]: r["reason"] for r in two.index() if r["name"] == "softmax"} == {
        "1": "unloaded",
        "2": "unloaded",
    }
    two.load_model("softmax")
    one.refresh()
    assert _served(one, "softmax") == _served(two, "softmax") == {"2"}


def test_load_pins_a_version_for_a_rollback_and_clears_the_pin(workers) -> None:
    one, two = workers
    status = one.load_model("softmax", ["1"])  # TF Serving's model_version_status
    assert [row["version"] for row in status if row["state"] == "AVAILABLE"] == ["1"]
    assert {row["state"] for row in status if row["version"] == "2"} <= {
        "UNLOADING"
    }  # released or on its way
    two.refresh()
    assert _served(two, "softmax") == {"1"} and two.get("softmax").version == "1"
    one.load_model("softmax")  # back to the policy: latest
    two.refresh()
    assert _served(two, "softmax") == {"2"}


def test_a_pin_to_a_version_that_fails_its_checks_is_refused_and_not_kept(workers, tmp_path: Path) -> None:
    one, two = workers
    add_version(one.settings.model_dir, "softmax", 3, truncate)
    with pytest.raises(RepositoryConflict, match=r"checksum|sha256|bytes"):
        one.load_model("softmax", ["3"])
    two.refresh()
    assert _served(one, "softmax") == _served(two, "softmax") == {"2"}
    states = {r["version"]: r["state"] for r in one.index() if r["name"] == "softmax"}
    assert states == {"1": "UNAVAILABLE", "2": "READY", "3": "UNAVAILABLE"}


def test_the_default_model_cannot_be_unloaded_and_unknown_names_are_404(workers) -> None:
    one, _ = workers
    with pytest.raises(RepositoryConflict, match="default model"):
        one.unload_model("cnn")
    with pytest.raises(UnknownModel):
        one.unload_model("resnet")
    with pytest.raises(UnknownModel):
        one.load_model("softmax", ["9"])
    assert one.get().name == "cnn"
