"""The model registry in one process with real LiteRT interpreters: policies, checks that refuse a
version, the atomic switch, and the release of a retired version's interpreter."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest

from service import metrics
from service.inference import ModelRegistry, ModelsUnavailable
from service.lifecycle.checks import REJECTED
from service.settings import Settings
from tests.support.model_versions import add_version, below_threshold, flip_bytes, model_dir_with, truncate
from tests.support.wait import wait_until

BATCH = np.zeros((3, 28, 28), dtype=np.float32)


def _settings(model_dir: Path, **values: object) -> Settings:
    return Settings(model_dir=model_dir, default_model="softmax", model_poll_s=0, **values)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return model_dir_with(tmp_path, softmax=1)


@pytest.fixture
def registry(model_dir: Path):
    registry = ModelRegistry.load(_settings(model_dir))
    yield registry
    registry.close()


def _failures(registry: ModelRegistry) -> dict[str, str]:
    return {f.version: f.reason for f in registry.failures()}


def test_a_new_version_replaces_the_old_one_on_refresh(registry: ModelRegistry, model_dir: Path) -> None:
    assert registry.get().version == "1"
    add_version(model_dir, "softmax", 2)
    assert registry.refresh()
    assert registry.get().version == "2"
    assert set(registry.versions("softmax")) == {"2"}
    assert not registry.refresh()  # nothing new: no change


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(truncate, "checksum"), (flip_bytes, "checksum"), (below_threshold, "accuracy")],
    ids=["truncated", "checksum-mismatch", "below-threshold"],
)
def test_a_broken_version_is_refused_and_the_old_keeps_serving(
    registry: ModelRegistry, model_dir: Path, damage, reason: str
) -> None:
    before = metrics.MODEL_LOAD_FAILURES.labels("softmax", "2", reason)._value.get()
    add_version(model_dir, "softmax", 2, damage)
    assert not registry.refresh()
    served = registry.get()
    assert served.version == "1" and served.predict(BATCH).shape == (3, 10)
    assert _failures(registry) == {"2": reason}
    assert metrics.MODEL_LOAD_FAILURES.labels("softmax", "2", reason)._value.get() == before + 1
    registry.refresh()  # same files: not tried (nor counted) again
    assert metrics.MODEL_LOAD_FAILURES.labels("softmax", "2", reason)._value.get() == before + 1
    status = {row["version"]: row for row in registry.status("softmax")}
    assert status["1"]["state"] == "AVAILABLE" and status["2"]["state"] == "END"
    assert status["2"]["status"]["error_code"] == "FAILED_PRECONDITION"


def test_a_version_without_metadata_or_marked_rejected_is_refused(
    registry: ModelRegistry, model_dir: Path
) -> None:
    add_version(model_dir, "softmax", 2, lambda p: (p / "metadata.json").unlink())
    add_version(model_dir, "softmax", 3, lambda p: (p / REJECTED).write_text("worse on feedback"))
    registry.refresh()
    assert registry.get().version == "1"
    assert _failures(registry) == {"2": "metadata", "3": "rejected"}


def test_marking_the_serving_version_rejected_rolls_back(registry: ModelRegistry, model_dir: Path) -> None:
    add_version(model_dir, "softmax", 2)
    registry.refresh()
    (model_dir / "softmax" / "2" / REJECTED).write_text("rolled back by hand")
    registry.refresh()
    assert registry.get().version == "1"


def test_a_removed_broken_version_is_no_longer_listed(registry: ModelRegistry, model_dir: Path) -> None:
    path = add_version(model_dir, "softmax", 2, truncate)
    registry.refresh()
    assert _failures(registry) == {"2": "checksum"}
    shutil.rmtree(path)
    registry.refresh()
    assert not registry.failures() and [row["version"] for row in registry.status("softmax")] == ["1"]


def test_a_fixed_version_is_tried_again(registry: ModelRegistry, model_dir: Path) -> None:
    path = add_version(model_dir, "softmax", 2, truncate)
    registry.refresh()
    assert registry.get().version == "1"
    shutil.rmtree(path)
    add_version(model_dir, "softmax", 2)
    registry.refresh()
    assert registry.get().version == "2" and not registry.failures()


def test_latest_2_serves_two_versions_and_unversioned_requests_get_the_highest(model_dir: Path) -> None:
    add_version(model_dir, "softmax", 2)
    add_version(model_dir, "softmax", 3)
    registry = ModelRegistry.load(_settings(model_dir, model_version_policy="latest:2"))
    try:
        assert set(registry.versions("softmax")) == {"2", "3"}
        assert registry.get().version == "3" and registry.get(version="2").version == "2"
    finally:
        registry.close()


def test_specific_serves_exactly_the_listed_versions(model_dir: Path) -> None:
    add_version(model_dir, "softmax", 2)
    add_version(model_dir, "softmax", 3)
    registry = ModelRegistry.load(_settings(model_dir, model_version_policy="softmax=specific:1,3"))
    try:
        assert set(registry.versions("softmax")) == {"1", "3"}
    finally:
        registry.close()


def test_canary_weights_split_unversioned_requests(model_dir: Path) -> None:
    add_version(model_dir, "softmax", 2)
    settings = _settings(
        model_dir, model_version_policy="all", model_routing="softmax: 1=90, 2=10", routing_seed=1
    )
    registry = ModelRegistry.load(settings)
    try:
        versions = [registry.get().version for _ in range(2000)]
        assert abs(versions.count("2") / 2000 - 0.10) <= 0.03
    finally:
        registry.close()


def test_the_shadow_version_is_offered_only_beside_another(model_dir: Path) -> None:
    add_version(model_dir, "softmax", 2)
    registry = ModelRegistry.load(_settings(model_dir, model_version_policy="all", model_shadow="softmax: 2"))
    try:
        primary = registry.get(version="1")
        shadow = registry.shadow("softmax", primary)
        assert shadow is not None and shadow.version == "2"
        assert registry.shadow("softmax", registry.get(version="2")) is None
    finally:
        registry.close()


def test_a_request_holding_the_old_version_finishes_on_it_then_its_interpreter_is_released(
    registry: ModelRegistry, model_dir: Path
) -> None:
    old = registry.get()
    released = old.batcher.released
    interpreter = weakref.ref(old.batcher.model._interpreter)  # type: ignore[union-attr]
    add_version(model_dir, "softmax", 2)
    registry.refresh()
    assert registry.get().version == "2"
    assert old.version == "1" and old.predict(BATCH).shape == (3, 10)  # still answers: it is held
    assert not released.is_set()
    del old
    gc.collect()
    assert released.wait(10), "the retired version's batcher did not stop once nobody held it"
    gc.collect()
    assert interpreter() is None, "the retired version's LiteRT interpreter is still alive"
    registry.refresh()
    assert [row["version"] for row in registry.status("softmax")] == ["2"]


def test_nothing_servable_fails_loudly_with_the_reasons(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    (model_dir / "softmax").mkdir(parents=True)
    add_version(model_dir, "softmax", 1, below_threshold)
    with pytest.raises(ModelsUnavailable, match="below the threshold"):
        ModelRegistry.load(_settings(model_dir))


def test_the_watcher_thread_refreshes_by_itself(model_dir: Path) -> None:
    registry = ModelRegistry.load(_settings(model_dir))
    try:
        registry.watch(0.2)
        add_version(model_dir, "softmax", 2)
        wait_until(lambda: registry.get().version == "2", 30, "the watcher to load version 2")
    finally:
        registry.close()


def test_thirty_reloads_leave_no_interpreter_behind(registry: ModelRegistry, model_dir: Path) -> None:
    interpreters = []
    for version in range(2, 32):
        interpreters.append(weakref.ref(registry.get().batcher.model._interpreter))  # type: ignore[union-attr]
        add_version(model_dir, "softmax", version)
        registry.refresh()
        assert registry.get().predict(BATCH).shape == (3, 10)
    gc.collect()
    wait_until(lambda: not any(ref() for ref in interpreters), 10, "every retired interpreter to be freed")
    assert registry.get().version == "31"
