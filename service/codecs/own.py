"""The own API (POST /predict): multipart uploads, a raw image body, or JSON (base64 images or pixels).

JSON items are checked against the fields of service/types/own.py (unknown fields are refused, as the spec
says) and decoded straight into numpy; answers are built from the `Prediction` model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from service.codecs.body import Limits, read_json
from service.codecs.images import decode_base64, decode_image, decode_images
from service.errors import BadInput
from service.tensors import as_array, is_image_shape, to_batch
from service.types.batch import Inference, Upload
from service.types.own import ImageItem, ImagesItem, PixelsItem, Prediction

EMPTY = (
    'empty request: send an image as multipart field \'image\', JSON {"image": "<base64>"} '
    'or {"pixels": [[...28x28...]]}'
)
# The fields each JSON item may have, by the field that says which kind of item it is.
_FIELDS = {
    "image": set(ImageItem.model_fields),
    "images": set(ImagesItem.model_fields),
    "pixels": set(PixelsItem.model_fields),
}
_PREDICTIONS = TypeAdapter(list[Prediction])


@dataclass(frozen=True)
class OwnRequest:
    """Decoded /predict input: float32 [n, 28, 28], the uploads (None for pixels), list or not, model.

    `model` is the first model the body names; `named` every one, since each must be a served model.
    """

    images: np.ndarray
    uploads: list[Upload | None]
    many: bool
    model: str | None
    named: tuple[str, ...] = ()


def decode_files(files: list[bytes], model: str | None, limits: Limits) -> OwnRequest:
    """Multipart uploads (fields `image`, or `file` for older clients)."""
    if not files:
        raise BadInput("no image: send the picture in a multipart field named 'image'")
    images, uploads = decode_images(files, limits)
    return OwnRequest(images, uploads, len(files) > 1, model or None, (model,) if model else ())


def decode_body(body: bytes, mimetype: str, limits: Limits) -> OwnRequest:
    """A non-multipart body: JSON (also without its content type, as `curl -d` sends it) or an image file."""
    if not body:
        raise BadInput(EMPTY)
    if mimetype == "application/json" or body.lstrip()[:1] in (b"{", b"["):
        return decode_json(read_json(body, what="the body", empty=EMPTY), limits)
    array, upload = decode_image(body, limits)  # curl --data-binary @digit.png -H 'Content-Type: image/png'
    return OwnRequest(array[np.newaxis], [upload], False, None)


def decode_json(doc: Any, limits: Limits) -> OwnRequest:
    """A JSON item or a list of items (see service/types/own.py) -> the request."""
    many = isinstance(doc, list)
    items = doc if many else [doc]
    if not items:
        raise BadInput("an empty list: send at least one image")
    limits.check_count(len(items))
    arrays: list[np.ndarray] = []
    uploads: list[Upload | None] = []
    named: list[str] = []
    for index, item in enumerate(items):
        where = f"item {index}" if many else "body"
        kind = _kind(item, where)
        if model := _model_field(item, where):
            named.append(model)
        if kind == "pixels":
            what = f"{where}: pixels"
            array = as_array(item["pixels"], what=what)
            single = is_image_shape(array.shape)
            batch = to_batch(array[np.newaxis] if single else array, what=what)
            many = many or not single
            uploads.extend([None] * len(batch))
            arrays.append(batch)
            continue
        value = item[kind]
        many = many or isinstance(value, list)
        texts = value if isinstance(value, list) else [value]
        limits.check_count(len(texts))
        for n, text in enumerate(texts):
            array, upload = decode_image(decode_base64(text, f"{where}, image {n}"), limits)
            uploads.append(upload)
            arrays.append(array[np.newaxis])
    if not arrays:
        raise BadInput("no images given")
    images = np.concatenate(arrays)
    limits.check_count(len(images))
    return OwnRequest(images, uploads, many, named[0] if named else None, tuple(named))


def _kind(item: Any, where: str) -> str:
    if not isinstance(item, dict):
        raise BadInput(f'{where}: expected an object like {{"image": "<base64>"}} or {{"pixels": [...]}}')
    kind = next((k for k in _FIELDS if k in item), None)
    if kind is None:
        raise BadInput(f'{where}: expected a field "image" (base64) or "pixels" (28x28 numbers)')
    unknown = set(item) - _FIELDS[kind]
    if unknown:
        raise BadInput(
            f"{where}: unknown field(s) {sorted(unknown)}; a {kind!r} item has {sorted(_FIELDS[kind])}"
        )
    return kind


def _model_field(item: dict[str, Any], where: str) -> str | None:
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        raise BadInput(f"{where}: 'model' must be a model name (text)")
    return model or None


def encode(result: Inference, many: bool, include_input: bool = False) -> bytes:
    """The JSON answer: one `Prediction`, or a list of them when a list (or a batch) was sent."""
    digits = result.digits.tolist()
    confidences = result.confidences.tolist()
    probabilities = [[round(p, 6) for p in row] for row in result.probabilities.tolist()]
    inputs = np.round(result.images, 4).tolist() if include_input else None
    latency = round(result.latency_ms, 3)
    answers = [
        Prediction(
            id=str(result.ids[i]),
            model=result.model,
            version=result.version,
            digit=digits[i],
            confidence=round(confidences[i], 6),
            probabilities=probabilities[i],
            latency_ms=latency,
            **({"input": inputs[i]} if inputs is not None else {}),
        )
        for i in range(len(result))
    ]
    if many:
        return _PREDICTIONS.dump_json(answers, exclude_unset=True)
    return answers[0].model_dump_json(exclude_unset=True).encode()
