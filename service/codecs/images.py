"""Image files inside requests (uploads, base64 text, TF Serving's {"b64": ...}) -> model input + upload."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from service.codecs.body import Limits
from service.errors import BadImage, BadInput
from service.preprocess import preprocess
from service.types.batch import Upload


def decode_image(data: bytes, limits: Limits) -> tuple[np.ndarray, Upload]:
    """Image file bytes -> the 28x28 model input, and the upload with its detected type (for the record)."""
    if not data:
        raise BadInput("the uploaded image is empty")
    pre = preprocess(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_image_pixels)
    return pre.array, Upload(data, pre.mime)


def decode_base64(text: Any, where: str) -> bytes:
    """Base64 text (or a data: URL, as canvas.toDataURL() gives) -> the bytes it encodes."""
    if not isinstance(text, str):
        raise BadInput(f"{where}: expected base64 text")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{where}: not valid base64") from None
    if not data:
        raise BadInput(f"{where}: the image is empty")
    return data


def decode_images(files: list[bytes], limits: Limits) -> tuple[np.ndarray, list[Upload | None]]:
    """Several image files -> float32 [n, 28, 28] and their uploads, in order."""
    limits.check_count(len(files))
    decoded = [decode_image(data, limits) for data in files]
    return np.stack([array for array, _ in decoded]), [upload for _, upload in decoded]
