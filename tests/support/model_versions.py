"""Model versions for lifecycle tests: a shipped artifact copied under a new version number, intact or
broken in one chosen way, and always moved into place with one rename (as a deploy tool should)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from service.artifacts import METADATA, TFLITE

ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = ROOT / "models"


def add_version(
    model_dir: Path,
    name: str,
    version: int,
    damage: Callable[[Path], None] | None = None,
    source: int = 1,
    keras: bool = False,
) -> Path:
    """Copy models/<name>/<source> to model_dir/<name>/<version> (metadata says the new version); the
    Keras file (not needed to serve) only when `keras`, as retraining starts from it."""
    staging = model_dir / name / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(SHIPPED / name / str(source), staging)
    if not keras:
        (staging / "model.keras").unlink(missing_ok=True)
    set_metadata(staging, version=str(version))
    if damage is not None:
        damage(staging)
    final = model_dir / name / str(version)
    staging.rename(final)
    return final


def set_metadata(path: Path, **fields: object) -> None:
    metadata = json.loads((path / METADATA).read_text())
    metadata.update(fields)
    (path / METADATA).write_text(json.dumps(metadata, indent=2))


def truncate(path: Path) -> None:
    """model.tflite cut short, as by a copy that ran out of disk."""
    data = (path / TFLITE).read_bytes()
    (path / TFLITE).write_bytes(data[: len(data) // 2])


def flip_bytes(path: Path) -> None:
    """model.tflite of the right size whose bytes differ from the recorded checksum."""
    data = bytearray((path / TFLITE).read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    (path / TFLITE).write_bytes(bytes(data))


def below_threshold(path: Path) -> None:
    """Intact files, but a recorded test accuracy under the recorded threshold."""
    set_metadata(path, test_accuracy=0.5)


def model_dir_with(tmp: Path, keras: bool = False, **versions: int) -> Path:
    """A model directory holding the shipped models as the given versions: model_dir_with(tmp, cnn=1)."""
    model_dir = tmp / "models"
    for name, version in versions.items():
        (model_dir / name).mkdir(parents=True, exist_ok=True)
        add_version(model_dir, name, version, keras=keras)
    return model_dir


def answers_like(other: str) -> Callable[[Path], None]:
    """A damage that is none: the version serves the shipped `other` model's network (its checksum and
    figures recorded), so its answers differ from the original's and tell which version answered."""

    def swap(path: Path) -> None:
        source = SHIPPED / other / "1"
        shutil.copyfile(source / TFLITE, path / TFLITE)
        theirs = json.loads((source / METADATA).read_text())
        set_metadata(
            path,
            files={TFLITE: theirs["files"][TFLITE]},
            test_accuracy=theirs["test_accuracy"],
            thresholds=theirs["thresholds"],
        )

    return swap
