"""End-to-end tests on a real Kubernetes cluster.

`make test-k8s` (part of `make test`) runs them on the local single-node cluster of scripts/local-cluster.sh,
which it brings up when needed, and loads the images built here into it (E2E_LOCAL_CLUSTER=1). `make e2e` runs
them on whatever cluster KUBECONFIG points at (kind, minikube: see k8s/README.md), with the images there.
A cluster that does not answer fails the run in CI and under make test-k8s, and skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, missing, require_binary
from tests.e2e.kube import Namespace
from tests.fixtures.image import ServiceImage
from tests.helm_tools import load_values

LOCAL_CLUSTER = os.environ.get("E2E_LOCAL_CLUSTER") == "1"
LOCAL_CLUSTER_SCRIPT = ROOT / "scripts" / "local-cluster.sh"
CASSANDRA_IMAGE_SCRIPT = ROOT / "scripts" / "build-cassandra-image.sh"
LAST = ("test_containment.py",)  # run after everything else: it checks what the whole run did


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: Path(str(item.fspath)).name in LAST)


def unavailable(what: str, fix: str) -> None:
    """The cluster or an image is missing: always a failure on the local cluster or in CI, else a skip."""
    if LOCAL_CLUSTER or IN_CI:
        pytest.fail(f"{what} is not available: {fix}")
    missing(what, fix)


@pytest.fixture(scope="session")
def kube_client() -> object:
    """The kubernetes client, configured from KUBECONFIG, after one call proved the cluster answers."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config()
        kubernetes.client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # no config file, no context, or nothing listening: all mean "no cluster"
        unavailable("a Kubernetes cluster", f"make cluster-up, or set KUBECONFIG (k8s/README.md): {exc}")
    return kubernetes.client


@dataclass(frozen=True)
class Images:
    """The images the cluster holds, and the helm --set arguments that point the chart at them."""

    service_image: str
    cassandra_image: str | None  # None: the chart's default (the official image, where pulls work)

    @property
    def service(self) -> list[str]:
        return _image_sets("image", self.service_image)

    @property
    def cassandra(self) -> list[str]:
        if not self.cassandra_image:
            return []
        # Imported into the node's containerd: never pulled (as ci/local-cassandra-values.yaml says).
        return [
            *_image_sets("cassandra.image", self.cassandra_image),
            "--set",
            "cassandra.image.pullPolicy=Never",
        ]


def _version() -> str:
    return next(
        line.split('"')[1]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )


def _image_sets(prefix: str, image: str) -> list[str]:
    repository, tag = image.rsplit(":", 1)
    return ["--set", f"{prefix}.repository={repository}", "--set", f"{prefix}.tag={tag}"]


def load_into_local_cluster(*images: str) -> None:
    result = subprocess.run(
        [str(LOCAL_CLUSTER_SCRIPT), "load", *images], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"local-cluster.sh load failed: {result.stdout}{result.stderr}"


def local_cassandra_image() -> str:
    """The Cassandra image built here for clusters that cannot pull the official one, tagged with the chart's
    Cassandra version (scripts/build-cassandra-image.sh keeps its layers, so a rebuild is quick).
    E2E_CASSANDRA_IMAGE names an image podman already holds instead."""
    if os.environ.get("E2E_CASSANDRA_IMAGE"):
        return os.environ["E2E_CASSANDRA_IMAGE"]
    if not CASSANDRA_IMAGE_SCRIPT.exists():
        pytest.fail(
            f"{CASSANDRA_IMAGE_SCRIPT.relative_to(ROOT)} is missing: the local cluster needs a local "
            "Cassandra image"
        )
    version = load_values()["cassandra"]["image"]["tag"]
    image = f"localhost/mnist-cassandra:{version}"
    build = subprocess.run(
        [str(CASSANDRA_IMAGE_SCRIPT)], env={**os.environ, "IMAGE": image, "CASSANDRA_VERSION": version},
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"{CASSANDRA_IMAGE_SCRIPT.name} failed: {build.stderr[-3000:]}"
    return image


@pytest.fixture(scope="session")
def images(request: pytest.FixtureRequest) -> Images:
    """On the local cluster: build the service and Cassandra images and load them into containerd. Elsewhere:
    E2E_IMAGE (default localhost/mnist-service:<version>) and, if set, E2E_CASSANDRA_IMAGE, as they are."""
    if LOCAL_CLUSTER:
        service_image: ServiceImage = request.getfixturevalue("service_image")
        cassandra = local_cassandra_image()
        load_into_local_cluster(service_image.tag, cassandra)
        return Images(service_image.tag, cassandra)
    service = os.environ.get("E2E_IMAGE", f"localhost/mnist-service:{_version()}")
    return Images(service, os.environ.get("E2E_CASSANDRA_IMAGE"))


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_binary(
        "kubectl", "make test-k8s puts the local cluster's kubectl on PATH; or install kubectl"
    )


@pytest.fixture(scope="session")
def new_namespace(kube_client: object, kubectl: str) -> Iterator[Callable[[str], Namespace]]:
    """Makes namespaces of their own (mnist-e2e-<purpose>-<random>); all are deleted at the end."""
    import kubernetes

    core = kubernetes.client.CoreV1Api()
    made: list[str] = []

    def make(purpose: str) -> Namespace:
        name = f"mnist-e2e-{purpose}-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": name}})
        made.append(name)
        return Namespace(
            name, core, kubernetes.client.AppsV1Api(), kubernetes.client.BatchV1Api(),
            kubernetes.client.AutoscalingV2Api(), kubectl,
        )  # fmt: skip

    yield make
    for name in made:
        core.delete_namespace(name)
