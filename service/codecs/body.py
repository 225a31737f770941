"""What every protocol's decoding shares: the limits it enforces and the one JSON-body reader."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from service.errors import BadInput
from service.settings import Settings

# 19 digits in a row: an integer that may not fit 64 bits (or a long fraction): such a body goes to `json`.
# Found by mapping every digit to "0" and searching for 19 of them (C speed; a regex costs more than orjson).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 19


@dataclass(frozen=True)
class Limits:
    """The input limits of the settings, as the codecs need them (no Settings object in the hot path)."""

    max_images: int  # per request, any protocol
    max_upload_bytes: int  # one image file
    max_image_pixels: int  # one decoded image, width x height

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_images_per_request, settings.max_upload_bytes, settings.max_image_pixels)

    def check_count(self, count: int) -> None:
        """One batch cap for every API: a request carries at most `max_images` images."""
        if count > self.max_images:
            raise BadInput(f"at most {self.max_images} images per request, got {count}")


def read_json(body: bytes, *, what: str, empty: str) -> Any:
    """The parsed JSON of a request body; `BadInput(empty)` when there is none, else why it is not JSON."""
    if not body.strip():
        raise BadInput(empty)
    # orjson reads integers beyond 64 bits as floats, json as ints: such bodies keep the json module's answer.
    if _LONG_DIGITS not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)  # several times faster on a tensor's thousands of numbers
        except orjson.JSONDecodeError:
            pass  # what orjson refuses (NaN, Infinity, other encodings) the json module decides, as before
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None


def read_object(body: bytes, *, what: str, empty: str) -> dict[str, Any]:
    """`read_json` for protocols whose body must be a JSON object."""
    doc = read_json(body, what=what, empty=empty)
    if not isinstance(doc, dict):
        raise BadInput(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc
