"""Runs a model.tflite: the serving-time model runtime, with no TensorFlow import.

`ai_edge_litert` and `tensorflow` register the same pybind types and cannot live in one process, so when
TensorFlow is already imported (during `mnist train`) its own `tf.lite.Interpreter` is used instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10


def _interpreter_class() -> Any:
    """LiteRT's interpreter, or TensorFlow's when TensorFlow is loaded already."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf.lite.Interpreter
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


class TFLiteModel:
    """One interpreter over one model.tflite; not thread-safe, so give each caller its own instance."""

    def __init__(self, interpreter: Any, path: Path) -> None:
        self.path = path
        self._interpreter = interpreter
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self._batch = -1  # batch size the tensors are allocated for

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> TFLiteModel:
        """Open `path` (a .tflite file) with `threads` CPU threads for the kernels that use them."""
        interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
        return cls(interpreter, Path(path))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 28, 28] in 0..1 -> float32 [N, 10] softmax probabilities."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected a batch of shape [N, 28, 28], got {list(batch.shape)}")
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        if n != self._batch:
            # Reallocating costs far more than one inference, so only when the batch size changes.
            self._interpreter.resize_tensor_input(self._input, [n, *INPUT_SHAPE], strict=True)
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output), dtype=np.float32)
