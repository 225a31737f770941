"""The model architectures (`softmax`, `cnn`): float32 [N, 28, 28] in 0..1 -> [N, 10] softmax probabilities.

Architecture only: training, augmentation and export live in service/train.py. Importing this module imports
TensorFlow, so only training code does.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10


def softmax() -> keras.Model:
    """Multinomial logistic regression: one Dense layer on the 784 pixels (the classic ~92% baseline)."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            layers.Flatten(),
            layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
        ],
        name="softmax",
    )


def _conv_bn(filters: int, kernel: int, padding: str, name: str) -> list[layers.Layer]:
    """Conv without bias (batch norm supplies it), then batch norm and ReLU."""
    return [
        layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"{name}_conv"),
        layers.BatchNormalization(name=f"{name}_bn"),
        layers.ReLU(name=f"{name}_relu"),
    ]


def cnn() -> keras.Model:
    """Two conv blocks (32 and 64 filters, 'valid' padding for a low CPU cost), a dense head, dropout."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            layers.Reshape((*INPUT_SHAPE, 1)),
            *_conv_bn(32, 3, "valid", "block1a"),  # 26x26
            *_conv_bn(32, 3, "valid", "block1b"),  # 24x24
            layers.MaxPooling2D(name="block1_pool"),  # 12x12
            *_conv_bn(64, 3, "valid", "block2a"),  # 10x10
            *_conv_bn(64, 3, "valid", "block2b"),  # 8x8
            layers.MaxPooling2D(name="block2_pool"),  # 4x4x64
            layers.Flatten(),
            layers.Dense(256, use_bias=False, name="head_dense"),
            layers.BatchNormalization(name="head_bn"),
            layers.ReLU(name="head_relu"),
            layers.Dropout(0.4, name="head_dropout"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
        ],
        name="cnn",
    )


ARCHITECTURES: dict[str, Callable[[], keras.Model]] = {"softmax": softmax, "cnn": cnn}
