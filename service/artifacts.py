"""The on-disk model artifact: `models/<name>/<version>/` with integer versions, like TF Serving.

The only module that knows the layout: `write_artifact` writes a version (atomically: a staging folder,
renamed when complete), `load_artifact` / `discover` / `latest` read them back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import UnknownModel

METADATA = "metadata.json"
TFLITE = "model.tflite"
KERAS = "model.keras"
TRAINING_PLOT = "training.png"
CONFUSION_PLOT = "confusion.png"
MODEL_FILES = (KERAS, TFLITE)  # listed in metadata.json with size and sha256
STAGING_PREFIX = ".staging-"  # a version being written; never served (not an integer folder name)

FileWriter = Callable[[Path], object]  # writes one file of the artifact at the path it is given


class ArtifactError(Exception):
    """An artifact directory is unreadable: no metadata.json, bad JSON, or a missing model file."""


@dataclass(frozen=True)
class Artifact:
    """One trained model version on disk; `metadata` is the parsed metadata.json."""

    name: str
    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def tflite_path(self) -> Path:
        return self.path / TFLITE

    @property
    def keras_path(self) -> Path:
        return self.path / KERAS

    @property
    def accuracy(self) -> float:
        """Test-set accuracy (0..1) measured when the artifact was written."""
        return float(self.metadata["test_accuracy"])

    @property
    def min_accuracy(self) -> float:
        """The accuracy below which `mnist evaluate` fails for this model."""
        return float(self.metadata["thresholds"]["min_accuracy"])


def load_artifact(path: Path) -> Artifact:
    """Read `path/metadata.json`; name and version come from the metadata, checked against the folder."""
    path = Path(path)
    try:
        metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a model artifact: it has no {METADATA}") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / METADATA} is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or "name" not in metadata or "version" not in metadata:
        raise ArtifactError(f"{path / METADATA} lacks the 'name' and 'version' fields")
    if not (path / TFLITE).is_file():
        raise ArtifactError(f"{path} has no {TFLITE}")
    return Artifact(
        name=str(metadata["name"]), version=str(metadata["version"]), path=path, metadata=metadata
    )


def write_artifact(
    model_dir: Path, name: str, version: str, metadata: Mapping[str, Any], files: Mapping[str, FileWriter]
) -> Artifact:
    """Write `model_dir/name/version`: each of `files` by its writer, then metadata.json (with name, version
    and the model files' sizes and hashes); the version appears complete or not at all."""
    final = Path(model_dir) / name / version
    if final.exists():
        raise ArtifactError(f"{final} exists already: a version is never overwritten")
    staging = final.with_name(f"{STAGING_PREFIX}{version}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    staging.mkdir(parents=True)
    try:
        for filename, write in files.items():
            write(staging / filename)
        if not (staging / TFLITE).is_file():
            raise ArtifactError(f"an artifact needs {TFLITE}; the writers made {sorted(files)}")
        document = {
            "name": name,
            "version": version,
            **metadata,
            "files": {f: _file_info(staging / f) for f in MODEL_FILES if (staging / f).is_file()},
        }
        (staging / METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_artifact(final)


def _file_info(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def discover(model_dir: Path) -> dict[str, list[Artifact]]:
    """Every artifact under `model_dir` by name, versions ascending; other folders are skipped."""
    found: dict[str, list[Artifact]] = {}
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return found
    for name_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        versions = sorted(
            (p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        artifacts = [load_artifact(p) for p in versions if (p / METADATA).is_file()]
        if artifacts:
            found[name_dir.name] = artifacts
    return found


def latest(model_dir: Path, name: str) -> Artifact:
    """The highest version of model `name`; `UnknownModel` if there is none."""
    artifacts = discover(model_dir).get(name)
    if not artifacts:
        raise UnknownModel(f"no model named {name!r} in {model_dir}")
    return artifacts[-1]


def next_version(model_dir: Path, name: str) -> int:
    """The version number a new artifact of `name` gets: one above the highest existing folder."""
    name_dir = Path(model_dir) / name
    existing = [int(p.name) for p in name_dir.iterdir() if p.name.isdigit()] if name_dir.is_dir() else []
    return max(existing, default=0) + 1
