"""`mnist retrain`: fine-tune the serving version on MNIST plus users' corrections, measure it on both, and
write the next version, servable only if it passed the promotion gate.

Gate: MNIST test accuracy at or above the model's threshold AND accuracy on the held-back feedback slice at
or above the serving version's on the same slice. A version that fails is still written (its figures are
worth keeping) with a `rejected` file naming the reason, which the serving workers refuse to load.

Cheap by design (a few hundred steps on CPU): batches mix MNIST training images and feedback images,
starting from the serving version's weights at a low learning rate. Deterministic per seed. Export,
evaluation and the on-disk layout are `mnist train`'s own (`train.export`, `train.evaluate`,
`artifacts.write_artifact`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service import artifacts
from service.artifacts import Artifact
from service.data import load_mnist
from service.lifecycle.checks import REJECTED, Refused, scan, verify
from service.lifecycle.feedback import FeedbackSet, FeedbackSplit, split_feedback
from service.runtime import TFLiteModel
from service.store.base import Store
from service.train import evaluate, export

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
    x_slice, y_slice = split.evaluation.images, split.evaluation.labels  # uint8: scaled chunk by chunk
    serving_slice = _accuracy(base.tflite_path.read_bytes(), x_slice, y_slice)
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

    tflite = export(model)
    evaluation = evaluate(model, tflite, x_test, y_test)  # TrainingError when the export drifts
    test_accuracy, confusion = evaluation.tflite_accuracy, evaluation.confusion
    slice_accuracy = _accuracy(tflite, x_slice, y_slice)
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
        "keras_test_accuracy": evaluation.keras_accuracy,
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
    files: dict[str, artifacts.FileWriter] = {
        artifacts.KERAS: model.save,
        artifacts.TFLITE: lambda path: path.write_bytes(tflite),
    }
    if not servable:
        # Written inside the staging folder: the version never appears without its marker.
        files[REJECTED] = lambda path: path.write_text(reason + "\n", encoding="utf-8")
    version = str(artifacts.next_version(model_dir, name))
    artifact = artifacts.write_artifact(model_dir, name, version, metadata, files)
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


def _accuracy(tflite: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a TFLite flatbuffer on uint8 images (0.0 for none), scaled 1,000 at a time so a slice
    of a million feedback images costs no float copy of itself."""
    if not len(y):
        return 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifacts.TFLITE
        path.write_bytes(tflite)
        model = TFLiteModel.load(path, threads=2)
        predictions = np.concatenate(
            [model.predict(_unit(x[i : i + 1000])).argmax(axis=1) for i in range(0, len(x), 1000)]
        )
    return float(np.mean(predictions == y))
