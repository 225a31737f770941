"""The chart with its defaults on a real cluster, installed the way the README says: `helm install --wait
--wait-for-jobs`; the keyspace-init hook Job, Ready pods, predictions through a port-forward and through the
Service's ClusterIP from inside the cluster, read back through the API and found with cqlsh in Cassandra,
`helm test`, the pods' user and read-only root, and what `helm uninstall` leaves.

Only the image values are set (the images this checkout built, on the local cluster); everything else is the
chart's default.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.e2e.conftest import Images
from tests.e2e.digits import drawn_one
from tests.e2e.kube import (
    Namespace,
    assert_images_present,
    cql,
    helm_install_args,
    pod_ready,
    port_forward,
    record_figure,
)
from tests.helm_tools import tool
from tests.readback import read_back

pytestmark = [pytest.mark.k8s, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

RELEASE = "mnist-service"  # so the objects are named as in the README
INSTALL_TIMEOUT_S = 900
API = "app.kubernetes.io/component=api"
CASSANDRA_POD = f"{RELEASE}-cassandra-0"


@dataclass
class Release:
    ns: Namespace
    install_started: float
    job_succeeded: bool


@pytest.fixture(scope="module")
def release(new_namespace: Callable[[str], Namespace], images: Images) -> Iterator[Release]:
    """helm install with the defaults, watching the keyspace-init hook Job with the kubernetes client."""
    ns = new_namespace("defaults")
    started = time.monotonic()
    install = subprocess.Popen(
        [tool("helm"), *helm_install_args(RELEASE, [*images.service, *images.cassandra], INSTALL_TIMEOUT_S),
         "--namespace", ns.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    succeeded = False
    try:
        # Helm deletes the hook Job once it succeeds (hook-delete-policy), so look while helm waits for it.
        deadline = started + INSTALL_TIMEOUT_S + 60
        while install.poll() is None and time.monotonic() < deadline:
            for job in ns.batch.list_namespaced_job(
                ns.name, label_selector="app.kubernetes.io/component=keyspace-init"
            ).items:
                assert (job.status.failed or 0) <= job.spec.backoff_limit, (
                    f"the keyspace-init Job failed: kubectl -n {ns.name} logs job/{job.metadata.name}"
                )
                succeeded |= bool(job.status.succeeded)
            assert_images_present(ns)
            time.sleep(1)
        out, err = install.communicate(timeout=60)
        assert install.returncode == 0, out + err  # helm fails the install when its hook Job fails
        succeeded |= job_completed_event(ns)
        record_figure("defaults: helm install --wait --wait-for-jobs", time.monotonic() - started, "s")
        yield Release(ns, started, succeeded)
    finally:
        if install.poll() is None:
            install.kill()
        ns.helm("uninstall", RELEASE, "--wait", timeout=300)


def job_completed_event(ns: Namespace) -> bool:
    """The Job controller's "Completed" event outlives the Job that helm deletes as soon as it succeeds."""
    events = ns.core.list_namespaced_event(ns.name, field_selector="involvedObject.kind=Job").items
    return any(e.reason == "Completed" and "keyspace-init" in e.involved_object.name for e in events)


@pytest.fixture(scope="module")
def service_url(release: Release) -> Iterator[str]:
    """The Service through `kubectl port-forward`; the first answered prediction is timed from install."""
    with port_forward(release.ns, f"service/{RELEASE}", 8000) as url:
        answered = requests.post(
            f"{url}/predict", data=drawn_one(), headers={"Content-Type": "image/png"}, timeout=30
        )
        assert answered.status_code == 200, answered.text
        record_figure(
            "defaults: helm install to first answered prediction",
            time.monotonic() - release.install_started,
            "s",
        )
        yield url


def test_install_ran_the_keyspace_job_and_every_pod_is_ready(release: Release) -> None:
    assert release.job_succeeded, "helm finished without the keyspace-init Job succeeding"
    pods = release.ns.core.list_namespaced_pod(release.ns.name).items
    running = [pod for pod in pods if pod.status.phase != "Succeeded"]
    assert {pod.metadata.labels["app.kubernetes.io/component"] for pod in running} == {"api", "cassandra"}
    assert all(pod_ready(pod) for pod in running), [(p.metadata.name, p.status.phase) for p in running]
    assert len([pod for pod in running if "api" in pod.metadata.labels.values()]) == 2  # replicaCount default


def test_prediction_through_a_port_forward_is_read_back_and_stored_in_cassandra(
    release: Release, service_url: str
) -> None:
    made = requests.post(
        f"{service_url}/predict", data=drawn_one(), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert made.status_code == 200, made.text
    assert made.json()["digit"] == 1
    read_back(service_url, made.json(), timeout_s=30, poll_s=0.5)
    rows = cql(
        release.ns,
        CASSANDRA_POD,
        f"SELECT id, digit, model FROM mnist.predictions WHERE id = {made.json()['id']};",
    )
    assert made.json()["id"] in rows and "(1 rows)" in rows, rows
    readiness = requests.get(f"{service_url}/readyz", timeout=10).json()
    assert readiness["store"]["backend"] == "cassandra" and readiness["store"]["cassandra"] == "up", readiness


IN_POD_PREDICT = """
import io, json, sys, urllib.request
from PIL import Image, ImageDraw
image = Image.new("L", (200, 200), 255)
ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=18)
body = io.BytesIO(); image.save(body, format="PNG")
headers = {"Content-Type": "image/png"}
request = urllib.request.Request(sys.argv[1] + "/predict", data=body.getvalue(), headers=headers)
print(json.dumps(json.load(urllib.request.urlopen(request, timeout=30))))
"""


def test_prediction_through_the_cluster_ip_from_a_pod(release: Release, service_url: str) -> None:
    """From inside a service pod, by the Service's DNS name: cluster DNS, kube-proxy's ClusterIP rules
    (hairpin back to a pod behind the same Service), the answer stored like any other."""
    pod = release.ns.pods(API)[0].metadata.name
    url = f"http://{RELEASE}.{release.ns.name}.svc.cluster.local:8000"
    result = release.ns.exec(pod, "python", "-c", IN_POD_PREDICT, url)
    assert result.returncode == 0, result.stdout + result.stderr
    made = json.loads(result.stdout)
    assert made["digit"] == 1
    read_back(service_url, made, timeout_s=30, poll_s=0.5)


def test_service_pods_run_as_10001_on_a_read_only_root(release: Release, service_url: str) -> None:
    pod = release.ns.pods(API)[0].metadata.name
    ids = release.ns.exec(pod, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.stdout.split() == ["10001", "10001"], ids.stdout + ids.stderr
    write = release.ns.exec(pod, "python", "-c", "open('/e2e-probe', 'w')")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stdout + write.stderr
    scratch = release.ns.exec(pod, "python", "-c", "open('/tmp/e2e-probe', 'w').write('ok')")
    assert scratch.returncode == 0, scratch.stderr  # the emptyDir the chart mounts stays writable


def test_metrics_are_served_for_prometheus(service_url: str) -> None:
    assert "mnist_http_requests_total" in requests.get(f"{service_url}/metrics", timeout=10).text


def test_helm_test_passes(release: Release, service_url: str) -> None:
    """The test pod exits 0 only when the Service answered "1" for its drawn digit. No --logs: helm v3 deletes
    a hook-succeeded pod before it fetches the logs (helm/helm#9098) and then fails the command."""
    result = release.ns.helm("test", RELEASE, "--timeout", "300s", timeout=360)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"TEST SUITE:\s+mnist-service-test-predict\s.*Phase:\s+Succeeded", result.stdout, re.DOTALL
    )


def test_helm_uninstall_leaves_only_the_cassandra_volume_claims(release: Release, service_url: str) -> None:
    """k8s/README.md says the data volumes stay after uninstall (and how to delete them); nothing else may."""
    ns = release.ns
    result = ns.helm("uninstall", RELEASE, "--wait", "--timeout", "300s", timeout=360)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 180
    while ns.core.list_namespaced_pod(ns.name).items and time.monotonic() < deadline:
        time.sleep(2)
    left = ns.run_kubectl(
        "get",
        "all,configmaps,secrets,serviceaccounts,pdb,hpa,networkpolicies,ingresses,jobs,pvc",
        "-o",
        "json",
    )
    names = {
        f"{item['kind']}/{item['metadata']['name']}"
        for item in json.loads(left.stdout)["items"]
        if (item["kind"], item["metadata"]["name"])
        not in {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
    }
    assert names == {f"PersistentVolumeClaim/data-{RELEASE}-cassandra-0"}, sorted(names)
