"""schemathesis hooks for tests/test_schemathesis.py: real digit images for the spec's image formats.

The spec marks image files with the custom formats `digit-image` (bytes) and `digit-image-base64`, because
JSON Schema cannot say "decodes and holds a digit"; these strategies draw such files from the MNIST test
digits the test wrote to $MNIST_SCHEMATHESIS_DIGITS.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from schemathesis.transport.serialization import Binary

DIGITS = [path.read_bytes() for path in sorted(Path(os.environ["MNIST_SCHEMATHESIS_DIGITS"]).glob("*.png"))]
assert DIGITS, "no digit PNGs in $MNIST_SCHEMATHESIS_DIGITS"
TEXTS = [base64.b64encode(png).decode() for png in DIGITS]

schemathesis.openapi.format("digit-image", st.sampled_from(DIGITS).map(Binary))
schemathesis.openapi.format(
    "digit-image-base64",
    st.sampled_from(TEXTS) | st.sampled_from(TEXTS).map("data:image/png;base64,".__add__),
)
