"""Robustness: MNIST digits photographed on paper must still be read correctly after preprocessing.

Each of 1,000 test digits is rendered the way a phone photo of a handwritten digit looks (dark ink on light,
slightly tinted and unevenly lit paper, 3-6x MNIST size, off-centre, blurred, noisy, JPEG) and sent through
`preprocess` and the shipped models.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from service.artifacts import latest
from service.data import load_test_set
from service.errors import UnknownModel
from service.preprocess import preprocess
from service.runtime import TFLiteModel
from tests.conftest import ROOT, missing
from tests.service_support import png_bytes

COUNT = 1000
MIN_CNN_ACCURACY = 0.98
# The softmax model sees only pixels, not shapes: small shifts cost it more, so it may lose a little.
MAX_SOFTMAX_LOSS = 0.03
LIMITS = {"max_bytes": 5_000_000, "max_pixels": 25_000_000}


def photo_like(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A JPEG that looks like a phone photo of `digit` written with a pen on paper."""
    size = round(28 * rng.uniform(3, 6))
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    height, width = (round(size * rng.uniform(1.3, 2.0)) for _ in range(2))
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    paper, pen = rng.uniform(170, 235), rng.uniform(20, 80)
    gray = np.full((height, width), paper, np.float32)
    gray[top : top + size, left : left + size] -= (paper - pen) * ink
    gray *= 1 + np.linspace(-1, 1, width, dtype=np.float32) * rng.uniform(-0.08, 0.08)  # uneven light
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], np.float32)  # warm paper
    rgb = Image.fromarray(np.clip(gray[:, :, None] * tint, 0, 255).astype(np.uint8))
    blurred = np.asarray(rgb.filter(ImageFilter.GaussianBlur(rng.uniform(0.25, 0.5) * size / 28)), np.float32)
    noisy = blurred + rng.normal(0, rng.uniform(2, 6), (height, width, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(70, 93))
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random choice of test digits and their labels."""
    images, labels, _ = load_test_set(mnist_data_dir)
    chosen = np.random.default_rng(2024).choice(len(images), COUNT, replace=False)
    return images[chosen], labels[chosen]


@pytest.fixture(scope="module")
def photographed(sample: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The sample as photos, each preprocessed back into a float32 [28, 28] model input."""
    rng = np.random.default_rng(7)
    return np.stack([preprocess(photo_like(d, rng), **LIMITS).array for d in sample[0]])


def load_model(name: str) -> TFLiteModel:
    try:
        artifact = latest(ROOT / "models", name)
    except UnknownModel:
        missing(f"the {name} model", f"train it with `mnist train --model {name}` into models/{name}/")
    return TFLiteModel.load(artifact.tflite_path)


def accuracy(model: TFLiteModel, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(model.predict(images).argmax(axis=1) == labels))


def test_photo_like_images_look_like_their_digits(
    sample: tuple[np.ndarray, np.ndarray], photographed: np.ndarray
) -> None:
    """Model-free check: each recovered digit is close to its original, pixel by pixel."""
    errors = np.abs(photographed - sample[0].astype(np.float32) / 255).mean(axis=(1, 2))
    assert errors.mean() < 0.05
    assert np.mean(errors < 0.08) > 0.95


@pytest.mark.slow
def test_cnn_reads_photographed_digits(
    sample: tuple[np.ndarray, np.ndarray], photographed: np.ndarray, record_property: pytest.RecordProperty
) -> None:
    model = load_model("cnn")
    measured = accuracy(model, photographed, sample[1])
    record_property("cnn_photo_accuracy", measured)
    original = accuracy(model, sample[0].astype(np.float32) / 255, sample[1])
    print(f"cnn: {measured:.1%} on {COUNT} photographed digits, {original:.1%} on the originals")
    assert measured >= MIN_CNN_ACCURACY


@pytest.mark.slow
def test_softmax_reads_photographed_digits_almost_as_well_as_the_originals(
    sample: tuple[np.ndarray, np.ndarray], photographed: np.ndarray, record_property: pytest.RecordProperty
) -> None:
    model = load_model("softmax")
    measured = accuracy(model, photographed, sample[1])
    original = accuracy(model, sample[0].astype(np.float32) / 255, sample[1])
    record_property("softmax_photo_accuracy", measured)
    print(f"softmax: {measured:.1%} on {COUNT} photographed digits, {original:.1%} on the originals")
    assert measured >= original - MAX_SOFTMAX_LOSS


@pytest.mark.parametrize("name", ["cnn", "softmax"])
def test_mnist_digits_keep_their_prediction_through_preprocessing(
    sample: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    model = load_model(name)
    images = sample[0]
    direct = model.predict(images.astype(np.float32) / 255).argmax(axis=1)
    preprocessed = np.stack([preprocess(png_bytes(d), **LIMITS).array for d in images])
    through = model.predict(preprocessed).argmax(axis=1)
    assert np.mean(direct == through) >= 0.995
