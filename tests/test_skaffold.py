"""skaffold.yaml: valid against the published v4beta14 JSON schema, wired to this Dockerfile and chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, missing
from tests.helm_tools import CHART, load_values

# CI keeps the published schema beside the repository (../shared/schemas); it is not copied into the repo.
SCHEMA = ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def sanitized(image: str) -> str:
    """Skaffold's template-variable form of an artifact name: `/ - . :` become `_`."""
    return re.sub(r"[/\-.:]", "_", image)


def test_skaffold_yaml_satisfies_the_published_schema(config: dict[str, Any]) -> None:
    if not SCHEMA.is_file():
        missing("skaffold's v4beta14 JSON schema", f"put it at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = list(validator.iter_errors(config))
    assert not errors, jsonschema.exceptions.best_match(errors)
    # The schema is strict (no unknown keys), so a misspelt field fails: guard that it stays so.
    broken = json.loads(json.dumps(config))
    broken["deploy"]["helm"]["releases"][0]["chartPaht"] = "charts/mnist-service"
    assert list(validator.iter_errors(broken))


def test_skaffold_uses_apiversion_v4beta14(config: dict[str, Any]) -> None:
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert config["kind"] == "Config"


def test_artifact_is_built_from_the_dockerfile_as_the_image_the_chart_runs(config: dict[str, Any]) -> None:
    (artifact,) = config["build"]["artifacts"]
    dockerfile = ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
    assert dockerfile.resolve() == (ROOT / "Dockerfile").resolve()
    assert artifact["image"] == load_values()["image"]["repository"]
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile.read_text(), flags=re.M)
    dev = next(p for p in config["profiles"] if p["name"] == "dev")
    target = next(patch["value"] for patch in dev["patches"] if patch["path"].endswith("/docker/target"))
    assert target in stages


def test_helm_release_deploys_the_chart_with_the_built_image(config: dict[str, Any]) -> None:
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART.resolve()
    name = sanitized(config["build"]["artifacts"][0]["image"])
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
    assert templates["image.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}@{{{{.IMAGE_DIGEST_{name}}}}}"
    values = load_values()
    for key in list(release.get("setValues", {})) + list(templates):
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, (
                f"skaffold sets {key}, the chart has no such value"
            )
            node = node[part]


def test_port_forward_reaches_the_service_port(config: dict[str, Any]) -> None:
    (forward,) = config["portForward"]
    assert forward["resourceType"] == "service"
    assert forward["resourceName"] == "mnist-service"  # the chart's full name for release "mnist-service"
    assert forward["port"] == load_values()["service"]["port"] == 8000
    assert forward["localPort"] == 8000


def test_profiles_for_kind_and_minikube_exist(config: dict[str, Any]) -> None:
    names = {profile["name"] for profile in config["profiles"]}
    assert {"kind", "minikube"} <= names


def test_file_sync_copies_python_sources_onto_the_installed_package(config: dict[str, Any]) -> None:
    (rule,) = config["build"]["artifacts"][0]["sync"]["manual"]
    assert rule["src"] == "service/**/*.py"
    assert any(Path(ROOT).glob(rule["src"]))
    python = re.search(r"python3\.(\d+)", rule["dest"])
    assert python and rule["dest"].endswith("/site-packages")
    # The default base image and the Debian base `make image` builds both ship this Python.
    assert f"python:3.{python.group(1)}-slim" in (ROOT / "Dockerfile").read_text()
