"""Helpers shared by the HTTP service tests: MNIST test digits as PNG/pixels, error-shape checks, metrics."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from service.data import load_mnist
from tests.support.api import Reply

# OpenAPI request/response shapes are checked against the service's own /openapi.json document.
OPENAPI_TIMEOUT_S = 10


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image array encoded as a PNG file, as a client would upload it."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Digit:
    """One MNIST test image: its label, its uint8 pixels and the same image as a PNG file."""

    index: int
    label: int
    pixels: np.ndarray  # uint8 [28, 28]

    @property
    def png(self) -> bytes:
        return png_bytes(self.pixels)

    @property
    def unit(self) -> list[list[float]]:
        """0..1 floats, the model's own scale."""
        return (self.pixels / 255.0).tolist()


@cache
def _test_set(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    mnist = load_mnist(data_dir)
    return mnist.test_images, mnist.test_labels


def digits(data_dir: Path, count: int, start: int = 0) -> list[Digit]:
    """`count` consecutive MNIST test digits from `start`."""
    images, labels = _test_set(data_dir)
    return [Digit(i, int(labels[i]), images[i]) for i in range(start, start + count)]


def assert_own_error(
    response: requests.Response | Reply, status: int, code: str | None = None
) -> dict[str, Any]:
    """The own API's error shape: {"error": {"code", "message"}} with the expected status."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def assert_flat_error(response: requests.Response | Reply, status: int) -> str:
    """TF Serving's and v2's error shape: {"error": "message"}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def openapi_schema(url: str, name: str) -> dict[str, Any]:
    """A component schema from the server's OpenAPI document, with its $refs resolvable by jsonschema."""
    spec = requests.get(f"{url}/openapi.json", timeout=OPENAPI_TIMEOUT_S).json()
    schema = json.loads(json.dumps(spec["components"]["schemas"][name]))
    schema["components"] = spec["components"]
    return dict(schema)
