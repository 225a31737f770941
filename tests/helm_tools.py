"""The real chart tools for tests: helm and kubeconform from `make tools`, and the Kubernetes JSON
schemas of the kubernetes-validate package in a layout kubeconform reads offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, missing

CHART = ROOT / "charts" / "mnist-service"
TOOLS_BIN = ROOT / ".cache" / "bin"
SCHEMA_CACHE = ROOT / ".cache" / "k8s-schemas"
RELEASE = "mnist-service"
NAMESPACE = "mnist"
# The value sets CI renders: the chart's defaults plus every file in ci/.
VALUE_SETS: dict[str, Path | None] = {"default": None} | {
    path.stem.removesuffix("-values"): path for path in sorted((CHART / "ci").glob("*.yaml"))
}


def tool(name: str) -> str:
    """Path of helm or kubeconform: .cache/bin (built by `make tools`) first, then PATH."""
    built = TOOLS_BIN / name
    if built.is_file():
        return str(built)
    found = shutil.which(name)
    if not found:
        missing(name, "run `make tools` (builds helm and kubeconform with go install into .cache/bin)")
    assert found is not None
    return found


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with the repository as working directory; output captured as text."""
    return subprocess.run([tool("helm"), *args], cwd=ROOT, capture_output=True, text=True, check=check)


def template_args(
    values_file: Path | None = None,
    *,
    sets: dict[str, str] | None = None,
    set_json: dict[str, Any] | None = None,
    kube_version: str | None = None,
) -> list[str]:
    """Arguments of `helm template` for one value set, rendered into namespace `mnist` as release `mnist`."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    for key, value in (set_json or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@dataclass
class Rendered:
    """The objects of one `helm template` run, including hooks (the keyspace-init Job, the test pod)."""

    text: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        """The one object of this kind (and app.kubernetes.io/component); fails on none or several."""
        found = [
            obj
            for obj in self.of_kind(kind)
            if component is None or obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]


def render(values_file: Path | None = None, **kwargs: Any) -> Rendered:
    """`helm template` the chart and parse every document."""
    text = run_helm(*template_args(values_file, **kwargs)).stdout
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(text=text, objects=objects)


def kubernetes_versions() -> list[str]:
    """Kubernetes versions CI validates against: 1.29 and the newest kubernetes-validate ships."""
    from kubernetes_validate import utils

    newest = utils.latest_version()
    return ["1.29.0", newest] if newest != "1.29.0" else ["1.29.0"]


def schema_location(version: str) -> str:
    """A kubeconform -schema-location template for `version`, preparing the schema files once.

    kubernetes-validate's schemas carry `$id: https://kubernetes.io/api/...` and refer to
    `/api/_definitions.json`, which kubeconform would fetch over the network; the copy here drops the ids and
    makes the references relative to the file, so they resolve offline.
    """
    from kubernetes_validate import utils

    source = Path(utils.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    if not source.is_dir():
        missing(
            f"Kubernetes {version} schemas", "pip install the kubernetes-validate version pinned in pyproject"
        )
    target = SCHEMA_CACHE / f"v{version}-standalone-strict"
    stamp = target / ".source"
    if not (stamp.is_file() and stamp.read_text() == str(source)):
        target.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.json"):
            text = path.read_text().replace('"$ref": "/api/_definitions.json#', '"$ref": "_definitions.json#')
            schema = json.loads(text)
            schema.pop("$id", None)
            # Atomic per file: another test session may be reading this cache at the same time.
            partial = target / f".{path.name}.{os.getpid()}"
            partial.write_text(json.dumps(schema))
            os.replace(partial, target / path.name)
        stamp.write_text(str(source))
    return str(
        SCHEMA_CACHE
        / "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
        / "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )


def kubeconform(
    manifests: str, version: str, skip_kinds: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Validate multi-document YAML with `kubeconform -strict` against Kubernetes `version`, offline."""
    args = [
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-output",
        "text",
        "-kubernetes-version",
        version,
        "-schema-location",
        schema_location(version),
    ]
    if skip_kinds:
        args += ["-skip", ",".join(skip_kinds)]
    if isinstance(manifests, str):
        return subprocess.run([*args, "-"], input=manifests, capture_output=True, text=True, check=False)
    return subprocess.run([*args, *map(str, manifests)], capture_output=True, text=True, check=False)


def load_values() -> dict[str, Any]:
    """The chart's default values.yaml."""
    return yaml.safe_load((CHART / "values.yaml").read_text())
