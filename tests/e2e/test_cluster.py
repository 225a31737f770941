"""The chart on a real cluster: helm install, rollout and keyspace-init Job watched with the kubernetes
client, a prediction through a port-forward read back through the API, `helm test`, helm uninstall.

Needs: a cluster in KUBECONFIG (or ~/.kube/config), kubectl, helm (`make tools`), and the image inside the
cluster (`make image`, then `kind load image-archive` or `minikube image load`; see k8s/README.md). The image
defaults to localhost/mnist-service:<version>; E2E_IMAGE overrides it (repository:tag).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from tests.conftest import ROOT, free_port, require_binary
from tests.helm_tools import CHART, tool
from tests.readback import read_back

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE = "mnist-e2e"
INSTALL_TIMEOUT_S = 900  # a fresh cluster pulls the Cassandra image and starts it


@dataclass
class Cluster:
    namespace: str
    core: Any
    apps: Any
    batch: Any


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A namespace of its own on the cluster KUBECONFIG points at; deleted afterwards with its contents."""
    kubernetes = pytest.importorskip("kubernetes")
    try:
        kubernetes.config.load_kube_config()
        kubernetes.client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # no config file, no context, or nothing listening: all mean "no cluster"
        pytest.skip(f"no Kubernetes cluster reachable (set KUBECONFIG; see k8s/README.md): {exc}")
    core = kubernetes.client.CoreV1Api()
    namespace = f"mnist-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        yield Cluster(namespace, core, kubernetes.client.AppsV1Api(), kubernetes.client.BatchV1Api())
    finally:
        core.delete_namespace(namespace)


def image_values() -> list[str]:
    version = next(
        line.split('"')[1]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )
    repository, tag = os.environ.get("E2E_IMAGE", f"localhost/mnist-service:{version}").rsplit(":", 1)
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]


def helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[str]:
    """helm install (laptop-sized values), watching the keyspace-init hook Job with the kubernetes client."""
    install = subprocess.Popen(
        [
            tool("helm"), "install", RELEASE, str(CHART), "--namespace", cluster.namespace,
            "--values", str(CHART / "ci" / "minimal-values.yaml"), *image_values(),
            "--timeout", f"{INSTALL_TIMEOUT_S}s",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    job_seen = False
    try:
        # Helm deletes the hook Job once it succeeds (hook-delete-policy), so look while helm waits for it.
        deadline = time.monotonic() + INSTALL_TIMEOUT_S + 60
        while install.poll() is None and time.monotonic() < deadline:
            jobs = cluster.batch.list_namespaced_job(
                cluster.namespace, label_selector="app.kubernetes.io/component=keyspace-init"
            ).items
            job_seen |= bool(jobs)
            failed = [job for job in jobs if (job.status.failed or 0) > job.spec.backoff_limit]
            assert not failed, (
                "the keyspace-init Job failed: kubectl logs job/<release>-mnist-service-keyspace-init"
            )
            assert_images_pull(cluster)
            time.sleep(1)
        out, err = install.communicate(timeout=60)
        assert install.returncode == 0, out + err  # helm fails the install when its hook Job fails
        assert job_seen, "helm finished without running the keyspace-init Job"
        yield RELEASE
    finally:
        if install.poll() is None:
            install.kill()
        helm("uninstall", RELEASE, "--namespace", cluster.namespace, "--wait", timeout=300)


def assert_images_pull(cluster: Cluster) -> None:
    """Fail fast, with the fix, when the cluster cannot find the service image (it was never loaded)."""
    for pod in cluster.core.list_namespaced_pod(cluster.namespace).items:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting and waiting.reason in {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"}:
                raise AssertionError(
                    f"{pod.metadata.name} cannot pull {status.image}: load it into the cluster first "
                    "(k8s/README.md: kind load image-archive / minikube image load) or set E2E_IMAGE"
                )


def wait_rollout(cluster: Cluster, name: str, timeout: float = 600) -> None:
    """Until every replica of the Deployment runs the current template and is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = cluster.apps.read_namespaced_deployment(name, cluster.namespace)
        status, wanted = deployment.status, deployment.spec.replicas
        if (
            status.observed_generation == deployment.metadata.generation
            and (status.updated_replicas or 0) == wanted
            and (status.ready_replicas or 0) == wanted
        ):
            return
        time.sleep(2)
    raise AssertionError(f"deployment {name} not rolled out in {timeout}s")


@pytest.fixture(scope="module")
def service_url(cluster: Cluster, release: str) -> Iterator[str]:
    """The Service through `kubectl port-forward` on a free local port."""
    kubectl = require_binary("kubectl", "install kubectl (kind and minikube guides name it)")
    wait_rollout(cluster, f"{release}-mnist-service")
    port = free_port()
    target = f"service/{release}-mnist-service"
    forward = subprocess.Popen(
        [kubectl, "port-forward", "--namespace", cluster.namespace, target, f"{port}:8000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=3).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert forward.poll() is None, forward.communicate()[1]
            assert time.monotonic() < deadline, "the port-forward never answered"
            time.sleep(1)
        yield url
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def drawn_one() -> bytes:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_prediction_through_the_service_is_recorded_in_cassandra(service_url: str) -> None:
    made = requests.post(
        f"{service_url}/predict", data=drawn_one(), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert made.status_code == 200, made.text
    read_back(service_url, made.json(), timeout_s=30, poll_s=0.5)
    readiness = requests.get(f"{service_url}/readyz", timeout=10).json()
    assert readiness["store"]["backend"] == "cassandra"
    assert readiness["store"]["cassandra"] == "up"


def test_metrics_are_served_for_prometheus(service_url: str) -> None:
    text = requests.get(f"{service_url}/metrics", timeout=10).text
    assert "mnist_http_requests_total" in text


def test_helm_test_passes(cluster: Cluster, release: str, service_url: str) -> None:
    result = helm(
        "test", release, "--namespace", cluster.namespace, "--logs", "--timeout", "300s", timeout=360
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"digit": 1' in result.stdout


def test_cassandra_statefulset_is_ready(cluster: Cluster, release: str, service_url: str) -> None:
    statefulset = cluster.apps.read_namespaced_stateful_set(
        f"{release}-mnist-service-cassandra", cluster.namespace
    )
    assert (statefulset.status.ready_replicas or 0) == statefulset.spec.replicas
