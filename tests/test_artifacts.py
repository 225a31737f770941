"""The on-disk artifact layout: writing (atomic), discovery, version order, latest, loading and its errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.artifacts import (
    CONFUSION_PLOT,
    KERAS,
    METADATA,
    TFLITE,
    TRAINING_PLOT,
    ArtifactError,
    discover,
    latest,
    load_artifact,
    next_version,
    write_artifact,
)
from service.errors import UnknownModel
from service.runtime import TFLiteModel
from tests.conftest import ROOT

SHIPPED_SOFTMAX = ROOT / "models" / "softmax" / "1"


def copy_version(model_dir: Path, name: str, version: str, **metadata_changes: object) -> Path:
    """A copy of the shipped softmax artifact as `model_dir/name/version`, metadata adjusted to match."""
    target = model_dir / name / version
    shutil.copytree(SHIPPED_SOFTMAX, target)
    metadata = json.loads((target / METADATA).read_text())
    metadata.update(name=name, version=version, **metadata_changes)
    (target / METADATA).write_text(json.dumps(metadata))
    return target


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    if not SHIPPED_SOFTMAX.is_dir():
        pytest.fail(f"{SHIPPED_SOFTMAX} is missing: it ships in git (made by mnist train --model softmax)")
    return tmp_path / "models"


def test_versions_are_ordered_as_integers(model_dir: Path) -> None:
    for version in ("2", "10", "1"):
        copy_version(model_dir, "softmax", version)
    found = discover(model_dir)
    assert [a.version for a in found["softmax"]] == ["1", "2", "10"]
    assert latest(model_dir, "softmax").version == "10"
    assert latest(model_dir, "softmax").path == model_dir / "softmax" / "10"


def test_several_models_are_found_by_name(model_dir: Path) -> None:
    copy_version(model_dir, "softmax", "1")
    copy_version(model_dir, "cnn", "3")
    found = discover(model_dir)
    assert sorted(found) == ["cnn", "softmax"]
    assert latest(model_dir, "cnn").tflite_path == model_dir / "cnn" / "3" / TFLITE


def test_folders_that_are_not_versions_are_ignored(model_dir: Path) -> None:
    copy_version(model_dir, "softmax", "1")
    shutil.copytree(model_dir / "softmax" / "1", model_dir / "softmax" / ".staging-2")
    (model_dir / "softmax" / "3").mkdir()  # a version still being written: no metadata yet
    (model_dir / "README.md").write_text("not a model")
    assert [a.version for a in discover(model_dir)["softmax"]] == ["1"]
    assert next_version(model_dir, "softmax") == 4


def test_next_version_starts_at_one(model_dir: Path) -> None:
    assert next_version(model_dir, "cnn") == 1
    copy_version(model_dir, "cnn", "1")
    assert next_version(model_dir, "cnn") == 2


def test_empty_or_absent_model_dir_has_no_models(tmp_path: Path) -> None:
    assert discover(tmp_path / "nowhere") == {}
    with pytest.raises(UnknownModel, match="cnn"):
        latest(tmp_path / "nowhere", "cnn")


def test_unknown_name_raises_unknown_model(model_dir: Path) -> None:
    copy_version(model_dir, "softmax", "1")
    with pytest.raises(UnknownModel, match="'cnn'"):
        latest(model_dir, "cnn")


def test_loaded_artifact_exposes_accuracy_and_threshold(model_dir: Path) -> None:
    path = copy_version(model_dir, "softmax", "1", test_accuracy=0.9321)
    artifact = load_artifact(path)
    assert (artifact.name, artifact.version, artifact.accuracy) == ("softmax", "1", 0.9321)
    assert artifact.min_accuracy == artifact.metadata["thresholds"]["min_accuracy"]


def test_missing_metadata_is_an_artifact_error(model_dir: Path) -> None:
    path = copy_version(model_dir, "softmax", "1")
    (path / METADATA).unlink()
    with pytest.raises(ArtifactError, match=r"metadata\.json"):
        load_artifact(path)


def test_broken_metadata_json_is_an_artifact_error(model_dir: Path) -> None:
    path = copy_version(model_dir, "softmax", "1")
    (path / METADATA).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(path)


def test_metadata_without_name_is_an_artifact_error(model_dir: Path) -> None:
    path = copy_version(model_dir, "softmax", "1")
    (path / METADATA).write_text(json.dumps({"version": "1"}))
    with pytest.raises(ArtifactError, match="'name'"):
        load_artifact(path)


def test_missing_tflite_is_an_artifact_error(model_dir: Path) -> None:
    path = copy_version(model_dir, "softmax", "1")
    (path / TFLITE).unlink()
    with pytest.raises(ArtifactError, match=TFLITE):
        load_artifact(path)


def shipped_writers() -> dict[str, Callable[[Path], object]]:
    """Writers of a real artifact's files: the shipped softmax model, plots and Keras file copied."""
    return {
        f: lambda path, f=f: shutil.copyfile(SHIPPED_SOFTMAX / f, path)
        for f in (TFLITE, KERAS, TRAINING_PLOT)
    }


def test_a_written_artifact_loads_back_with_its_metadata_and_file_hashes(model_dir: Path) -> None:
    metadata = {"test_accuracy": 0.9321, "thresholds": {"min_accuracy": 0.92}, "seed": 7}
    written = write_artifact(model_dir, "softmax", "1", metadata, shipped_writers())
    loaded = load_artifact(model_dir / "softmax" / "1")
    assert loaded == written
    assert (loaded.name, loaded.version, loaded.accuracy, loaded.min_accuracy) == (
        "softmax",
        "1",
        0.9321,
        0.92,
    )
    assert loaded.metadata["seed"] == 7
    tflite = (SHIPPED_SOFTMAX / TFLITE).read_bytes()
    assert loaded.metadata["files"][TFLITE] == {
        "bytes": len(tflite),
        "sha256": hashlib.sha256(tflite).hexdigest(),
    }
    assert set(loaded.metadata["files"]) == {TFLITE, KERAS}  # the model files; plots are not hashed
    assert TFLiteModel.load(loaded.tflite_path).predict(np.zeros((1, 28, 28), np.float32)).shape == (1, 10)
    assert discover(model_dir)["softmax"] == [loaded]
    assert sorted(p.name for p in (model_dir / "softmax").iterdir()) == ["1"], "no staging folder is left"


def test_a_version_is_never_overwritten(model_dir: Path) -> None:
    write_artifact(model_dir, "softmax", "1", {"test_accuracy": 0.9}, shipped_writers())
    with pytest.raises(ArtifactError, match="exists already"):
        write_artifact(model_dir, "softmax", "1", {"test_accuracy": 0.1}, shipped_writers())
    assert load_artifact(model_dir / "softmax" / "1").accuracy == 0.9


def test_a_failed_write_leaves_no_version_behind(model_dir: Path) -> None:
    def broken(path: Path) -> None:
        path.write_bytes(b"half a plot")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_artifact(model_dir, "softmax", "1", {}, {**shipped_writers(), CONFUSION_PLOT: broken})
    assert list((model_dir / "softmax").iterdir()) == []
    assert next_version(model_dir, "softmax") == 1


def test_an_artifact_without_a_tflite_model_is_not_written(model_dir: Path) -> None:
    writers = {KERAS: shipped_writers()[KERAS]}
    with pytest.raises(ArtifactError, match=TFLITE):
        write_artifact(model_dir, "softmax", "1", {}, writers)
    assert discover(model_dir) == {}
