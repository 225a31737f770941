"""`mnist retrain` end to end: feedback made through the real API (MNIST training digits, some of them
rotated hard, labelled with their true digit), then the real command writes version 2 with both figures,
and a run on scrambled labels is written as rejected, which the serving checks refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from service.data import load_mnist
from service.lifecycle.checks import REJECTED, Refused, verify
from tests.service_support import png_bytes
from tests.support.model_versions import model_dir_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PLAIN, HARD = 200, 120
RETRAIN_TIMEOUT_S = 900


def _hard(pixels: np.ndarray, i: int) -> np.ndarray:
    """A digit rotated by 35-50 degrees: legible to a person, often misread by a model trained upright."""
    angle = (35 + (i % 16)) * (1 if i % 2 else -1)
    return np.asarray(Image.fromarray(pixels).rotate(angle, resample=Image.Resampling.BILINEAR))


def _send_feedback(url: str, images: list[np.ndarray], labels: list[int]) -> int:
    """Predict each image through the API and label it with its true digit; returns the misread count."""
    wrong = 0
    session = requests.Session()
    for image, label in zip(images, labels, strict=True):
        r = session.post(f"{url}/predict", files={"image": ("d.png", png_bytes(image))}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        wrong += body["digit"] != label
        f = session.post(f"{url}/api/predictions/{body['id']}/feedback", json={"label": label}, timeout=30)
        assert f.status_code == 200, f.text
    return wrong


def _retrain(model_dir: Path, db: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    mnist = Path(sys.executable).with_name("mnist")
    argv = [str(mnist), "retrain", "--model", "cnn", "--from", f"sqlite:///{db}",
            "--model-dir", str(model_dir), "--data-dir", str(data_dir),
            "--epochs", "2", "--steps-per-epoch", "100", *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=RETRAIN_TIMEOUT_S)


@pytest.fixture(scope="module")
def feedback_store(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> tuple[Path, int]:
    """A SQLite store holding PLAIN + HARD labelled predictions made through a real server."""
    from tests.fixtures.server import start_server

    tmp = tmp_path_factory.mktemp("feedback")
    model_dir = model_dir_with(tmp, cnn=1)
    server = start_server(tmp / "server", {"MNIST_MODEL_DIR": str(model_dir)}, workers=2)
    try:
        mnist = load_mnist(mnist_data_dir)
        rng = np.random.default_rng(5)
        picks = rng.choice(len(mnist.train_labels), PLAIN + HARD, replace=False)
        images = [mnist.train_images[i] for i in picks[:PLAIN]]
        images += [_hard(mnist.train_images[i], n) for n, i in enumerate(picks[PLAIN:])]
        wrong = _send_feedback(server.url, images, [int(mnist.train_labels[i]) for i in picks])
    finally:
        server.stop()
    return server.db_path, wrong


def test_retrain_writes_the_next_version_with_both_figures(
    feedback_store: tuple[Path, int], tmp_path: Path, mnist_data_dir: Path
) -> None:
    db, wrong = feedback_store
    assert wrong > 0, "no feedback disagreed with the model: the hard digits are not hard"
    model_dir = model_dir_with(tmp_path, keras=True, cnn=1)
    result = _retrain(model_dir, db, mnist_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    print("\n" + result.stdout.strip())
    assert "Epoch 1/2" in result.stdout and "Epoch 2/2" in result.stdout  # a progress bar per epoch

    meta = json.loads((model_dir / "cnn" / "2" / "metadata.json").read_text())
    assert meta["base_version"] == "1" and meta["serving"]["version"] == "1"
    assert meta["feedback"]["train"] + meta["feedback"]["evaluation_slice"] == PLAIN + HARD
    for figures in (meta, meta["serving"]):
        assert 0 < figures["test_accuracy"] <= 1 and 0 < figures["feedback_slice_accuracy"] <= 1
    assert meta["promotion"]["servable"] is True, meta["promotion"]
    assert meta["feedback_slice_accuracy"] >= meta["serving"]["feedback_slice_accuracy"]
    assert meta["test_accuracy"] >= meta["thresholds"]["min_accuracy"]
    assert not (model_dir / "cnn" / "2" / REJECTED).exists()
    assert verify(model_dir / "cnn" / "2", "cnn", 2).version == "2"  # the workers would load it

    again = model_dir_with(tmp_path / "again", keras=True, cnn=1)
    assert _retrain(again, db, mnist_data_dir).returncode == 0
    meta_again = json.loads((again / "cnn" / "2" / "metadata.json").read_text())
    assert meta_again["files"]["model.tflite"] == meta["files"]["model.tflite"]  # same seed, same bytes


def test_the_gate_rejects_a_version_trained_on_scrambled_labels(
    feedback_store: tuple[Path, int], tmp_path: Path, mnist_data_dir: Path
) -> None:
    db, _ = feedback_store
    model_dir = model_dir_with(tmp_path, keras=True, cnn=1)
    # Mostly feedback in each batch, every label scrambled: a model that learned noise.
    result = _retrain(model_dir, db, mnist_data_dir, "--shuffle-labels", "--feedback-share", "0.75")
    assert result.returncode == 0, result.stderr[-3000:]
    print("\n" + result.stdout.strip())
    assert "REJECTED" in result.stdout
    path = model_dir / "cnn" / "2"
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["promotion"]["servable"] is False
    assert (path / REJECTED).read_text().strip() == meta["promotion"]["reason"]
    with pytest.raises(Refused) as refused:
        verify(path, "cnn", 2)
    assert refused.value.reason == "rejected"


def test_retrain_refuses_to_run_on_too_little_feedback(tmp_path: Path, mnist_data_dir: Path) -> None:
    from service.store.sqlite import SqliteStore

    SqliteStore(tmp_path / "empty.db").close()
    model_dir = model_dir_with(tmp_path, keras=True, cnn=1)
    result = _retrain(model_dir, tmp_path / "empty.db", mnist_data_dir)
    assert result.returncode != 0 and "only 0 labelled predictions" in result.stderr
    assert not (model_dir / "cnn" / "2").exists()
