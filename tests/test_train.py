"""`mnist train` end to end in a subprocess (no TensorFlow in the test process): artifact, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.artifacts import CONFUSION_PLOT, KERAS, TFLITE, TRAINING_PLOT, discover
from service.data import load_test_set
from service.runtime import TFLiteModel

MNIST = str(Path(sys.executable).with_name("mnist"))
# Same seed, same machine: the metadata of two runs may differ only in these fields (timings, the machine's
# load, the checkout's commit since others may commit in between, and the model files' zip timestamps).
VARYING = {"version", "created", "git_commit", "training_seconds", "seconds_per_epoch",
           "training_cpu_seconds", "machine", "files"}  # fmt: skip


def train(
    out: Path, data_dir: Path, *extra: str, model: str = "cnn", epochs: int = 1
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MNIST, "train", "--model", model, "--limit", "2000", "--epochs", str(epochs), "--seed", "7",
         "--out", str(out), "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_two_runs_with_one_seed_give_the_same_model(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    for _ in range(2):
        done = train(out, mnist_data_dir)
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = discover(out)["cnn"]
    assert (first.version, second.version) == ("1", "2")

    assert abs(first.accuracy - second.accuracy) <= 0.001
    same = {k: v for k, v in first.metadata.items() if k not in VARYING}
    assert same == {k: v for k, v in second.metadata.items() if k not in VARYING}

    meta = first.metadata
    assert meta["command"] == (
        f"mnist train --model cnn --limit 2000 --epochs 1 --seed 7 --out {out} --data-dir {mnist_data_dir}"
    )
    assert (meta["seed"], meta["epochs"], meta["train_images"]) == (7, 1, 2000)
    assert meta["thresholds"] == {"min_accuracy": 0.995}
    assert abs(meta["test_accuracy"] - meta["keras_test_accuracy"]) <= 0.0005
    assert len(meta["history"]["loss"]) == 1 and len(meta["history"]["val_accuracy"]) == 1
    for name in (KERAS, TFLITE, TRAINING_PLOT, CONFUSION_PLOT):
        assert (first.path / name).stat().st_size > 0
    assert not [p for p in (out / "cnn").iterdir() if p.name.startswith(".")]

    # The exported models agree with each other and with the accuracy the metadata records.
    images, labels, _ = load_test_set(mnist_data_dir)
    inputs = images.astype(np.float32) / 255.0
    probabilities = [TFLiteModel.load(a.tflite_path).predict(inputs) for a in (first, second)]
    assert np.allclose(probabilities[0], probabilities[1], atol=1e-5)
    assert float(np.mean(probabilities[0].argmax(axis=1) == labels)) == pytest.approx(
        first.accuracy, abs=1e-9
    )


def test_missing_data_stops_training_with_a_one_line_error(tmp_path: Path) -> None:
    done = train(tmp_path / "models", tmp_path / "empty")
    assert done.returncode == 1
    assert "Error: train-images-idx3-ubyte.gz is missing" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_training_progress_is_shown_per_epoch(mnist_data_dir: Path, tmp_path: Path) -> None:
    done = train(tmp_path / "models", mnist_data_dir, "--batch-size", "500", model="softmax", epochs=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Epoch 1/2" in done.stdout and "Epoch 2/2" in done.stdout and "4/4" in done.stdout
    assert "models/softmax/1: test accuracy" in done.stdout
    written = json.loads((tmp_path / "models" / "softmax" / "1" / "metadata.json").read_text())
    assert (written["batch_size"], written["epochs"]) == (500, 2)
    assert written["thresholds"] == {"min_accuracy": 0.92}
