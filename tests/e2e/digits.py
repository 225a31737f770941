"""Digit images drawn the way a user draws them (black ink on white), as PNG uploads for the e2e requests."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def drawn_one(offset: int = 0, width: int = 18) -> bytes:
    """A vertical stroke: the service reads it as a 1."""
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100 + offset, 30), (100 + offset, 170)], fill=0, width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_digits() -> list[bytes]:
    """A handful of different uploads, so the load is not one cached body."""
    return [drawn_one(offset, width) for offset in (-30, 0, 30) for width in (14, 18, 22)]
