"""The on-disk artifact layout: discovery, version order, latest, loading and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.artifacts import (
    METADATA,
    TFLITE,
    ArtifactError,
    discover,
    latest,
    load_artifact,
    next_version,
)
from service.errors import UnknownModel
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
