"""The hot path reads a multipart form as Flask's route does: the same answer for every form, odd ones too.

service/api/hotpath.py parses `POST /predict` forms with `multipart`'s parser and replays to Flask (werkzeug's
parser) whatever that one refuses. Each form below is sent once through the hot path and once to the Flask
app alone (the WSGI app the hot path wraps); status and answer must agree, ids and latencies aside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from service.api.hotpath import HotPath
from tests.service_support import digits

BOUNDARY = "b0undary-x"


@pytest.fixture
def app(module_app: Flask) -> Flask:
    """These tests only read what they send: one app serves the module."""
    return module_app


@pytest.fixture(scope="module")
def pngs(mnist_data_dir: Path) -> list[bytes]:
    return [d.png for d in digits(mnist_data_dir, 3)]


def part(name: str, data: bytes, filename: str | None = "d.png", extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"Content-Disposition: {disposition}\r\n{extra}"
    if filename is not None:
        head += "Content-Type: image/png\r\n"
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"


def form(*parts: bytes, end: bytes = f"--{BOUNDARY}--\r\n".encode(), preamble: bytes = b"") -> bytes:
    return preamble + b"".join(parts) + end


FORMS: dict[str, Any] = {
    "one image": lambda p: form(part("image", p[0])),
    "images in `image` then `file`": lambda p: form(
        part("file", p[2]), part("image", p[0]), part("image", p[1])
    ),
    "a model field": lambda p: form(part("model", b"softmax", None), part("image", p[0])),
    "two model fields, the first counts": lambda p: form(
        part("model", b"softmax", None), part("model", b"cnn", None), part("image", p[0])
    ),
    "an unknown model": lambda p: form(part("model", b"resnet", None), part("image", p[0])),
    "an image without a filename": lambda p: form(part("image", p[0], None)),
    "an empty filename": lambda p: form(part("image", p[0], "")),
    "other fields only": lambda p: form(part("picture", p[0])),
    "an empty upload": lambda p: form(part("image", b"")),
    "a preamble": lambda p: form(part("image", p[0]), preamble=b"ignored text\r\n"),
    "an extra part header": lambda p: form(part("image", p[0], extra="X-Note: yes\r\n")),
    "no closing boundary": lambda p: form(part("image", p[0]), end=b""),
    "an epilogue": lambda p: form(part("image", p[0]), end=f"--{BOUNDARY}--\r\ntrailing".encode()),
    "bare LF line ends": lambda p: form(part("image", p[0])).replace(b"\r\n", b"\n"),
    "not multipart at all": lambda p: b"just text",
    "more parts than MAX_FORM_PARTS": lambda p: form(*[part("note", b"x", None)] * 1001, part("image", p[0])),
}


def answer(wsgi: Any, body: bytes, content_type: str) -> tuple[int, Any]:
    """Status and JSON answer, without what differs between two answers to the same image."""
    response = Client(wsgi).post("/predict", data=body, content_type=content_type)
    doc = json.loads(response.get_data())

    def strip(value: Any) -> Any:
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("id", "latency_ms")}
        return value

    return response.status_code, strip(doc)


@pytest.mark.parametrize("name", FORMS)
def test_the_hot_path_answers_each_form_as_flask_does(app: Flask, pngs: list[bytes], name: str) -> None:
    hot = app.wsgi_app
    assert isinstance(hot, HotPath)
    body = FORMS[name](pngs)
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    through_hot_path = answer(hot, body, content_type)
    assert through_hot_path == answer(hot.flask, body, content_type)
    assert through_hot_path[0] in (200, 400, 404, 413), through_hot_path


def test_a_form_without_a_boundary_is_answered_as_flask_does(app: Flask, pngs: list[bytes]) -> None:
    hot = app.wsgi_app
    assert isinstance(hot, HotPath)
    body = form(part("image", pngs[0]))
    through_hot_path = answer(hot, body, "multipart/form-data")
    assert through_hot_path == answer(hot.flask, body, "multipart/form-data")
    assert through_hot_path[0] == 400, through_hot_path
