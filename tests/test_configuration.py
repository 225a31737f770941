"""Configuration: every setting documented in docs/configuration.md, environment names honoured, bad values
named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import ROOT


def _configuration_section() -> str:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]


def test_every_setting_is_in_the_settings_table() -> None:
    section = _configuration_section()
    for name, field in Settings.model_fields.items():
        assert f"`MNIST_{name.upper()}" in section, name
        assert field.description and field.description in section, name


def test_the_store_url_is_read_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNIST_STORE_URL", raising=False)
    monkeypatch.setenv("STORE_URL", "cassandra://db1,db2/mnist")
    assert Settings().store_url == "cassandra://db1,db2/mnist"
    monkeypatch.setenv("MNIST_STORE_URL", "sqlite:///elsewhere.db")
    assert Settings().store_url == "sqlite:///elsewhere.db"


def test_serve_refuses_a_bad_value_naming_the_variable(tmp_path: Path) -> None:
    mnist = Path(sys.executable).with_name("mnist")
    env = {"PATH": "/usr/bin:/bin", "MNIST_PORT": "eighty", "MNIST_MODEL_DIR": str(ROOT / "models")}
    result = subprocess.run(
        [str(mnist), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "port" in result.stderr.lower() and "eighty" in result.stderr


def test_serve_says_which_model_is_missing(tmp_path: Path) -> None:
    mnist = Path(sys.executable).with_name("mnist")
    env = {"PATH": "/usr/bin:/bin", "MNIST_MODEL_DIR": str(tmp_path), "MNIST_DEFAULT_MODEL": "cnn"}
    result = subprocess.run(
        [str(mnist), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "'cnn'" in result.stderr and "make train" in result.stderr
