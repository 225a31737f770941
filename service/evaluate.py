"""Re-measure an artifact's model.tflite on the 10k test set, through the serving runtime (no TensorFlow)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifacts import Artifact, load_artifact
from service.data import load_test_set
from service.runtime import TFLiteModel

BATCH = 500


@dataclass(frozen=True)
class Evaluation:
    """Measured vs recorded accuracy of one artifact; `passed` when the measurement meets the threshold."""

    artifact: Artifact
    accuracy: float
    per_class: dict[str, float]
    images: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.artifact.min_accuracy


def evaluate_artifact(path: Path, data_dir: Path, *, threads: int = 2) -> Evaluation:
    """Score `path/model.tflite` on the test set; raises `ArtifactError` or `DataError`."""
    artifact = load_artifact(path)
    images, labels, _ = load_test_set(data_dir)
    model = TFLiteModel.load(artifact.tflite_path, threads=threads)
    inputs = images.astype(np.float32) / 255.0
    started = time.perf_counter()
    predictions = np.concatenate(
        [model.predict(inputs[i : i + BATCH]).argmax(axis=1) for i in range(0, len(inputs), BATCH)]
    )
    seconds = time.perf_counter() - started
    correct = predictions == labels
    per_class = {str(d): float(correct[labels == d].mean()) for d in range(10)}
    return Evaluation(artifact, float(correct.mean()), per_class, len(labels), seconds)


def report(result: Evaluation) -> str:
    """A small plain-text table: overall and per-digit accuracy, measured next to recorded."""
    artifact = result.artifact
    recorded = artifact.metadata.get("per_class_accuracy", {})
    lines = [
        f"{artifact.name} v{artifact.version} ({artifact.tflite_path}), {result.images} test images "
        f"in {result.seconds:.2f} s",
        f"{'':>9} {'measured':>9} {'recorded':>9}",
        f"{'overall':>9} {result.accuracy:>9.2%} {artifact.accuracy:>9.2%}",
    ]
    for digit, accuracy in result.per_class.items():
        before = recorded.get(digit)
        lines.append(f"{'digit ' + digit:>9} {accuracy:>9.2%} {'' if before is None else f'{before:.2%}':>9}")
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(f"{verdict}: {result.accuracy:.2%} against a minimum of {artifact.min_accuracy:.2%}")
    return "\n".join(lines)
