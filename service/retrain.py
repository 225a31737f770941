"""`mnist retrain`: fine-tune the serving version on MNIST plus users' corrections, measure it on both, and
write the next version, servable only if it passed the promotion gate.

Gate: MNIST test accuracy at or above the model's threshold AND accuracy on the held-back feedback slice at
or above the serving version's on the same slice. A version that fails is still written (its figures are
worth keeping) with a `rejected` file naming the reason, which the serving workers refuse to load.

Cheap by design (a few hundred steps on CPU): batches mix MNIST training images and feedback images,
starting from the serving version's weights at a low learning rate. Deterministic per seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service import artifacts
from service.artifacts import Artifact
from service.data import load_mnist
from service.lifecycle.checks import REJECTED, Refused, scan, verify
from service.lifecycle.feedback import FeedbackSet, FeedbackSplit, split_feedback
from service.runtime import TFLiteModel
from service.store.base import Store

log = logging.getLogger(__name__)


class RetrainError(Exception):
    """Retraining cannot start or finish: no serving version to start from, too little feedback."""


@dataclass(frozen=True)
class RetrainOptions:
    """Everything that decides a run besides the data; recorded in metadata.json."""

    steps_per_epoch: int = 100
    epochs: int = 3
    batch_size: int = 64
    feedback_share: float = 0.25  # of each batch, drawn from the feedback (the rest from MNIST)
    learning_rate: float = 1e-4
    holdout: float = 0.2  # share of feedback kept as the evaluation slice
    seed: int = 42
    min_feedback: int = 50
    shuffle_labels: bool = False  # tests: train on scrambled feedback labels to get a worse model


@dataclass(frozen=True)
class Outcome:
    artifact: Artifact
    servable: bool
    reason: str


def serving_version(model_dir: Path, name: str) -> Artifact:
    """The version the workers serve under the `latest` policy: the highest one that passes its checks."""
    for number in reversed(scan(model_dir).get(name, [])):
        try:
            return verify(model_dir / name / str(number), name, number)
        except Refused as exc:
            log.info("skipping %s v%d: %s", name, number, exc.message)
    raise RetrainError(f"no servable {name!r} version under {model_dir} to start from")


def retrain(
    name: str, store: Store, *, model_dir: Path, data_dir: Path, options: RetrainOptions, command: str = ""
) -> Outcome:
    """Read the feedback, fine-tune, evaluate, gate and write the next version of `name`."""
    base = serving_version(model_dir, name)
    if not base.keras_path.is_file():
        raise RetrainError(f"{base.path} has no {artifacts.KERAS} to fine-tune (the trainer needs it)")
    mnist = load_mnist(data_dir)
    split = split_feedback(store.labelled(), options.seed, options.holdout)
    _check_enough(split, options)
    log.info(
        "feedback: %d for training, %d in the evaluation slice, %d skipped",
        len(split.train), len(split.evaluation), split.skipped,
    )  # fmt: skip
    x_test, y_test = _unit(mnist.test_images), mnist.test_labels
    x_slice, y_slice = _unit(split.evaluation.images), split.evaluation.labels
    serving_slice = _tflite_accuracy(base.tflite_path, x_slice, y_slice)
    serving = {
        "version": base.version,
        "test_accuracy": base.accuracy,
        "feedback_slice_accuracy": serving_slice,
    }

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    model = keras.models.load_model(base.keras_path)
    for layer in model.layers:
        # Frozen batch-norm statistics: a few hundred small mixed batches would otherwise drag the MNIST
        # statistics the model was trained with towards the feedback's (and cost MNIST accuracy).
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    x_train, y_train = _mixed_batches(mnist.train_images, mnist.train_labels, split.train, options)
    smoothing = float(base.metadata.get("recipe", {}).get("label_smoothing", 0.0))
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=options.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
        metrics=["accuracy"],
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    fitted = model.fit(
        x_train,
        np.eye(10, dtype=np.float32)[y_train],
        batch_size=options.batch_size,
        epochs=options.epochs,
        steps_per_epoch=options.steps_per_epoch,  # epochs walk on through the drawn batches
        shuffle=False,  # the batches are drawn (seeded) already
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar per epoch; one line each in a log
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    with tempfile.TemporaryDirectory() as tmp:
        tflite_path = Path(tmp) / artifacts.TFLITE
        tflite_path.write_bytes(_to_tflite(model))
        test_accuracy, confusion = _tflite_scores(tflite_path, x_test, y_test)
        slice_accuracy = _tflite_accuracy(tflite_path, x_slice, y_slice)
        threshold = base.min_accuracy
        servable, reason = gate(test_accuracy, threshold, slice_accuracy, serving_slice)
        metadata = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "base_version": base.version,
            "seed": options.seed,
            "retrain": {
                **options.__dict__,
                "steps": options.steps_per_epoch * options.epochs,
                "training_seconds": round(seconds, 1),
                "training_cpu_seconds": round(cpu_seconds, 1),
            },
            "train_images": len(x_train),
            "feedback": {
                "train": len(split.train),
                "evaluation_slice": len(split.evaluation),
                "skipped": split.skipped,
                "slice_share": options.holdout,
            },
            "test_accuracy": test_accuracy,
            "feedback_slice_accuracy": slice_accuracy,
            "serving": serving,
            "per_class_accuracy": {
                str(d): float(confusion[d, d] / max(confusion[d].sum(), 1)) for d in range(10)
            },
            "confusion_matrix": confusion.tolist(),
            "thresholds": {"min_accuracy": threshold},
            "promotion": {"servable": servable, "reason": reason},
            "recipe": base.metadata.get("recipe"),
            "history": history,
            "input": base.metadata.get("input"),
            "output": base.metadata.get("output"),
            "data_sha256": mnist.sha256,
            "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
        }
        artifact = _write_version(
            model_dir, name, metadata, model, tflite_path, rejected=None if servable else reason
        )
    log.info(
        "%s v%s written: %s (%s)", name, artifact.version, "servable" if servable else "rejected", reason
    )
    return Outcome(artifact, servable, reason)


def gate(
    test_accuracy: float, threshold: float, slice_accuracy: float, serving_slice: float
) -> tuple[bool, str]:
    """(servable, why): both conditions of the promotion gate, and the figures that decided it."""
    if test_accuracy < threshold:
        return False, f"MNIST test accuracy {test_accuracy:.4f} is below the threshold {threshold:.4f}"
    if slice_accuracy < serving_slice:
        return False, (
            f"feedback-slice accuracy {slice_accuracy:.4f} is below the serving version's {serving_slice:.4f}"
        )
    return True, (
        f"MNIST test accuracy {test_accuracy:.4f} >= {threshold:.4f} and feedback-slice accuracy "
        f"{slice_accuracy:.4f} >= the serving version's {serving_slice:.4f}"
    )


def _check_enough(split: FeedbackSplit, options: RetrainOptions) -> None:
    total = len(split.train) + len(split.evaluation)
    if total < options.min_feedback or not len(split.evaluation) or not len(split.train):
        raise RetrainError(
            f"only {total} labelled predictions ({len(split.train)} for training, {len(split.evaluation)} "
            f"in the slice); need at least {options.min_feedback} with both parts non-empty"
        )


def _mixed_batches(
    mnist_images: np.ndarray, mnist_labels: np.ndarray, feedback: FeedbackSet, options: RetrainOptions
) -> tuple[np.ndarray, np.ndarray]:
    """steps x batch_size examples, each batch `feedback_share` feedback (drawn with replacement) and the
    rest MNIST, in a seeded order."""
    rng = np.random.default_rng(options.seed)
    steps = options.steps_per_epoch * options.epochs
    from_feedback = round(options.batch_size * options.feedback_share)
    from_mnist = options.batch_size - from_feedback
    labels = feedback.labels.copy()
    if options.shuffle_labels:
        labels = rng.permutation(labels)
    f_idx = rng.integers(0, len(feedback), size=(steps, from_feedback))
    m_idx = rng.integers(0, len(mnist_labels), size=(steps, from_mnist))
    images = np.concatenate([feedback.images[f_idx], mnist_images[m_idx]], axis=1)
    targets = np.concatenate([labels[f_idx], mnist_labels[m_idx]], axis=1)
    order = rng.permuted(np.tile(np.arange(options.batch_size), (steps, 1)), axis=1)
    images = np.take_along_axis(images, order[:, :, None, None], axis=1)
    targets = np.take_along_axis(targets, order, axis=1)
    return _unit(images.reshape(-1, 28, 28)), targets.reshape(-1)


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def _tflite_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    model = TFLiteModel.load(path, threads=2)
    if not len(x):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([model.predict(x[i : i + 1000]).argmax(axis=1) for i in range(0, len(x), 1000)])


def _tflite_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(_tflite_predictions(path, x) == y)) if len(y) else 0.0


def _tflite_scores(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    predictions = _tflite_predictions(path, x)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (y, predictions), 1)
    return float(np.mean(predictions == y)), confusion


def _to_tflite(model: Any) -> bytes:
    """SavedModel export (serving signature, inference mode), converted; as `mnist train` does.
    TODO(store branch): use train.export() once the fit/evaluate/export split is on main."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())


def _write_version(
    model_dir: Path, name: str, metadata: dict[str, Any], model: Any, tflite: Path, rejected: str | None
) -> Artifact:
    """The next version folder, complete (with its `rejected` marker if any) before it appears by one rename,
    so a watcher never sees a rejected version without its marker.
    TODO(store branch): artifacts.write_artifact() once it is on main."""
    version = str(artifacts.next_version(model_dir, name))
    staging = Path(model_dir) / name / f".retrain-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model.save(staging / artifacts.KERAS)
        shutil.copyfile(tflite, staging / artifacts.TFLITE)
        if rejected is not None:
            (staging / REJECTED).write_text(rejected + "\n", encoding="utf-8")
        files = {f: _file_info(staging / f) for f in (artifacts.KERAS, artifacts.TFLITE)}
        document = {"name": name, "version": version, **metadata, "files": files}
        (staging / artifacts.METADATA).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        final = Path(model_dir) / name / version
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return artifacts.load_artifact(final)


def _file_info(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
