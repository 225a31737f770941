"""The artifacts shipped in models/: accuracy re-measured by the serving runtime, metadata, evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.artifacts import CONFUSION_PLOT, KERAS, METADATA, TFLITE, TRAINING_PLOT, Artifact, latest
from service.data import load_test_set
from service.evaluate import evaluate_artifact
from service.runtime import TFLiteModel
from tests.conftest import ROOT

MODELS = ROOT / "models"
MNIST = str(Path(sys.executable).with_name("mnist"))
THRESHOLDS = {"softmax": 0.92, "cnn": 0.995}
MAX_ARTIFACT_BYTES = 10_000_000


@pytest.fixture(scope="module", params=sorted(THRESHOLDS))
def shipped(request: pytest.FixtureRequest) -> Artifact:
    return latest(MODELS, request.param)


@pytest.fixture(scope="module")
def test_inputs(mnist_data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_test_set(mnist_data_dir)
    return images.astype(np.float32) / 255.0, labels


def test_shipped_model_meets_its_threshold_on_the_full_test_set(
    shipped: Artifact, mnist_data_dir: Path
) -> None:
    result = evaluate_artifact(shipped.path, mnist_data_dir)
    assert result.images == 10_000
    assert shipped.min_accuracy == THRESHOLDS[shipped.name]
    assert result.accuracy >= shipped.min_accuracy, f"{shipped.name}: {result.accuracy:.4f}"
    # Same model file, same data: the runtime reproduces what training recorded.
    assert result.accuracy == pytest.approx(shipped.accuracy, abs=0.0005)
    for digit, accuracy in result.per_class.items():
        assert accuracy == pytest.approx(shipped.metadata["per_class_accuracy"][digit], abs=0.002)


def test_metadata_records_how_the_model_was_made(shipped: Artifact, mnist_data_dir: Path) -> None:
    meta = shipped.metadata
    assert meta["command"].startswith(f"mnist train --model {shipped.name}")
    assert meta["git_commit"] and not meta["git_commit"].endswith("-dirty")
    assert meta["train_images"] == 60_000 and meta["epochs"] >= 1 and meta["batch_size"] >= 1
    assert 0 < meta["training_seconds"] <= 30 * 60
    assert meta["parameters"] > 0 and set(meta["per_class_accuracy"]) == {str(d) for d in range(10)}
    assert meta["input"]["shape"] == [None, 28, 28] and meta["output"]["shape"] == [None, 10]
    _, _, digests = load_test_set(mnist_data_dir)
    assert digests.items() <= meta["data_sha256"].items()
    assert np.array(meta["confusion_matrix"]).sum() == 10_000


def test_artifact_files_are_complete_and_small(shipped: Artifact) -> None:
    for name in (KERAS, TFLITE, METADATA, TRAINING_PLOT, CONFUSION_PLOT):
        path = shipped.path / name
        assert path.is_file(), path
        assert path.stat().st_size < MAX_ARTIFACT_BYTES, path
    assert shipped.metadata["files"][TFLITE]["bytes"] == shipped.tflite_path.stat().st_size
    for plot in (TRAINING_PLOT, CONFUSION_PLOT):
        with Image.open(shipped.path / plot) as image:
            assert image.format == "PNG" and min(image.size) >= 400


def test_runtime_outputs_probabilities_independent_of_batching(
    shipped: Artifact, test_inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = test_inputs
    model = TFLiteModel.load(shipped.tflite_path, threads=1)
    batched = model.predict(images[:64])
    assert batched.shape == (64, 10) and batched.dtype == np.float32
    assert np.allclose(batched.sum(axis=1), 1.0, atol=1e-5) and (batched >= 0).all()
    one_by_one = np.concatenate([model.predict(images[i : i + 1]) for i in range(64)])
    assert np.allclose(one_by_one, batched, atol=1e-5)
    two_threads = TFLiteModel.load(shipped.tflite_path, threads=2).predict(images[:64])
    assert np.allclose(two_threads, batched, atol=1e-5)
    assert model.predict(images[:0]).shape == (0, 10)


def test_runtime_rejects_a_wrongly_shaped_batch(shipped: Artifact) -> None:
    model = TFLiteModel.load(shipped.tflite_path)
    with pytest.raises(ValueError, match=r"\[N, 28, 28\]"):
        model.predict(np.zeros((2, 784), dtype=np.float32))


def test_evaluate_command_prints_the_table_and_passes(shipped: Artifact, mnist_data_dir: Path) -> None:
    done = subprocess.run(
        [MNIST, "evaluate", str(shipped.path), "--data-dir", str(mnist_data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "PASS" in done.stdout and "digit 9" in done.stdout and "measured" in done.stdout


def test_evaluate_command_exits_1_below_the_threshold(
    shipped: Artifact, mnist_data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / shipped.name / "1"
    shutil.copytree(shipped.path, copy)
    metadata = json.loads((copy / METADATA).read_text())
    metadata["thresholds"]["min_accuracy"] = 0.9999  # no shipped model is that good
    (copy / METADATA).write_text(json.dumps(metadata))
    done = subprocess.run(
        [MNIST, "evaluate", str(copy), "--data-dir", str(mnist_data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "FAIL" in done.stdout


def test_evaluate_command_reports_missing_data_in_one_line(shipped: Artifact, tmp_path: Path) -> None:
    done = subprocess.run(
        [MNIST, "evaluate", str(shipped.path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "t10k-images-idx3-ubyte.gz" in done.stderr and "Traceback" not in done.stderr


def test_this_test_process_never_imported_tensorflow() -> None:
    # TensorFlow and ai_edge_litert cannot share a process: the serving path must stay TensorFlow-free.
    assert "tensorflow" not in sys.modules
