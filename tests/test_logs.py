"""Log lines: one JSON object per line with the access fields, and request ids that are safe to echo."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from service.logs import configure_logging, log_request, request_id
from service.settings import Settings


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_an_access_line_is_one_json_object_with_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="json", log_level="INFO"))
    log_request(
        request_id="abc-123",
        route="/predict",
        method="POST",
        status=200,
        latency_ms=3.14159,
        client="127.0.0.1",
        model="cnn",
        digit=7,
    )
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["logger"] == "service.access"
    assert line["level"] == "INFO"
    assert {k: line[k] for k in ("request_id", "route", "method", "status", "model", "digit", "client")} == {
        "request_id": "abc-123",
        "route": "/predict",
        "method": "POST",
        "status": 200,
        "model": "cnn",
        "digit": 7,
        "client": "127.0.0.1",
    }
    assert line["latency_ms"] == 3.142
    assert line["timestamp"].endswith("+00:00")


def test_configuring_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="json"))
    configure_logging(Settings(log_format="json"))
    logging.getLogger("service.test").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_text_format_and_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="text", log_level="WARNING"))
    log_request(request_id="r", route="/readyz", method="GET", status=200, latency_ms=0.5)
    log_request(request_id="r", route="/predict", method="POST", status=503, latency_ms=12.0)
    err = capsys.readouterr().err
    assert "/readyz" not in err  # INFO is below the level
    assert "ERROR" in err and "POST /predict 503 12.0ms" in err


@pytest.mark.parametrize(
    "incoming", ["req-1", "0f8fad5b-d9cb-469f-a165-70867728950e", "a" * 128, "trace:1/2+3=4"]
)
def test_a_sane_incoming_request_id_is_kept(incoming: str) -> None:
    assert request_id(incoming) == incoming


@pytest.mark.parametrize("incoming", [None, "", "a" * 129, "two words", "line\nbreak", '"quoted"', "ünï"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_fresh_one(incoming: str | None) -> None:
    fresh = request_id(incoming)
    assert fresh != incoming
    assert len(fresh) == 32 and int(fresh, 16) >= 0
    assert request_id(incoming) != fresh
