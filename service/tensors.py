"""JSON numbers and raw tensors -> the model's float32 [N, 28, 28] batch, with clear errors for bad input.

Every protocol (own API `pixels`, TF Serving `instances`/`inputs`, v2 tensors) lands here, so a shape, type or
range mistake gets the same message whichever door it came through.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadInput

SIDE = 28
PIXELS = SIDE * SIDE
# One image may be given as [28, 28], [28, 28, 1] or a flat [784].
_IMAGE_SHAPES = ((SIDE, SIDE), (SIDE, SIDE, 1), (PIXELS,))
_NUMERIC_KINDS = "iuf"


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """True for the shape of one image (not a batch)."""
    return tuple(shape) in _IMAGE_SHAPES


def as_array(value: Any, *, what: str) -> np.ndarray:
    """Nested JSON lists of numbers -> a numeric ndarray; text, booleans, nulls, ragged lists are refused."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise BadInput(f"{what}: expected numbers in nested lists, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        # numpy 2 refuses ragged nesting with ValueError ("inhomogeneous shape").
        raise BadInput(f"{what}: nested lists must be rectangular (every row the same length)") from exc
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise BadInput(f"{what}: every value must be a number (found {_kind_name(array)})")
    return array


def _kind_name(array: np.ndarray) -> str:
    return {"b": "true/false", "U": "text", "S": "text", "O": "null, text or an oversized number"}.get(
        array.dtype.kind, str(array.dtype)
    )


def to_batch(array: np.ndarray, *, what: str, scale: str = "auto") -> np.ndarray:
    """A batch of images in any accepted layout -> float32 [N, 28, 28] in 0..1.

    `array` holds N images: shape [N, 28, 28], [N, 28, 28, 1] or [N, 784]. `scale` is "auto" (an image whose
    largest value exceeds 1 is read as 0..255), "unit" (0..1) or "byte" (0..255).
    """
    if array.ndim == 0 or array.shape[0] == 0:
        raise BadInput(f"{what}: no images given")
    image_shape = tuple(array.shape[1:])
    if image_shape not in _IMAGE_SHAPES:
        raise BadInput(
            f"{what}: each image must have shape [28, 28], [28, 28, 1] or [784], got {list(image_shape)}"
        )
    batch = array.astype(np.float32, copy=False).reshape(array.shape[0], SIDE, SIDE)
    if array.dtype.kind == "f" and not np.isfinite(batch).all():
        raise BadInput(f"{what}: values must be finite numbers (found NaN or infinity)")
    low = float(batch.min())
    if low < 0:
        raise BadInput(f"{what}: pixel values must be 0..1 or 0..255, found {low:g}")
    peaks = batch.reshape(batch.shape[0], -1).max(axis=1)
    high = float(peaks.max())
    if high > 255:
        raise BadInput(f"{what}: pixel values must be 0..1 or 0..255, found {high:g}")
    if scale == "byte":
        return batch / np.float32(255)
    if scale == "unit":
        if high > 1:
            raise BadInput(f"{what}: values must be 0..1 for this datatype, found {high:g}")
        return batch
    # Auto: decide per image, so a mixed list (one in 0..1, one in 0..255) still means what the caller meant.
    byte_scaled = peaks > 1
    if not byte_scaled.any():
        return batch
    return np.where(byte_scaled[:, np.newaxis, np.newaxis], batch / np.float32(255), batch)


def images_from_json(value: Any, *, what: str) -> np.ndarray:
    """One image ([28,28], [28,28,1], [784]) or a list of them, as JSON numbers -> float32 [N, 28, 28]."""
    array = as_array(value, what=what)
    if is_image_shape(array.shape):
        array = array[np.newaxis]
    return to_batch(array, what=what)


def to_pixels(images: np.ndarray) -> list[bytes]:
    """Float [N, 28, 28] 0..1 images -> for each, the 784 uint8 bytes a record keeps."""
    quantized = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return [image.tobytes() for image in quantized]


def from_pixels(pixels: bytes) -> np.ndarray:
    """The 784 stored bytes -> float32 [28, 28] 0..1."""
    return np.frombuffer(pixels, dtype=np.uint8).reshape(SIDE, SIDE).astype(np.float32) / np.float32(255)
