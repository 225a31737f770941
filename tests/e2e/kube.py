"""The e2e suite's view of a cluster: the kubernetes client APIs of one namespace, helm and kubectl as the
user runs them, exec into pods, port-forwards, and waits that report what they are waiting for."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.conftest import ROOT, free_port
from tests.helm_tools import CHART, tool

FIGURES = ROOT / "test-output" / "e2e-figures.json"


@dataclass
class Namespace:
    """One namespace of the cluster and the API groups the suite uses in it."""

    name: str
    core: Any
    apps: Any
    batch: Any
    autoscaling: Any
    kubectl: str

    def run_kubectl(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl, "--namespace", self.name, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def run_kubectl_json(self, *args: str) -> list[dict[str, Any]]:
        """The items of `kubectl get ... -o json`."""
        items: list[dict[str, Any]] = json.loads(self.run_kubectl(*args, "-o", "json").stdout)["items"]
        return items

    def exec(
        self, pod: str, *command: str, container: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's container (exit status kept, never raised)."""
        where = ["-c", container] if container else []
        return self.run_kubectl("exec", pod, *where, "--", *command, timeout=timeout, check=False)

    def pods(self, selector: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.name, label_selector=selector).items)

    def helm(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("helm"), *args, "--namespace", self.name],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def helm_install_args(release: str, values: list[str], timeout_s: int) -> list[str]:
    """`helm install --wait --wait-for-jobs`, the way the README tells users to install."""
    return [
        "install",
        release,
        str(CHART),
        *values,
        "--wait",
        "--wait-for-jobs",
        "--timeout",
        f"{timeout_s}s",
    ]


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_rollout(ns: Namespace, name: str, timeout: float = 600) -> None:
    """Until every replica of the Deployment runs the current template and is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = ns.apps.read_namespaced_deployment(name, ns.name)
        status, wanted = deployment.status, deployment.spec.replicas
        if (
            status.observed_generation == deployment.metadata.generation
            and (status.updated_replicas or 0) == wanted
            and (status.ready_replicas or 0) == wanted
            and (status.replicas or 0) == wanted
        ):
            return
        time.sleep(1)
    raise AssertionError(f"deployment {name} not rolled out in {timeout}s")


def wait_statefulset_ready(ns: Namespace, name: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = ns.apps.read_namespaced_stateful_set(name, ns.name)
        if (
            sts.status.ready_replicas or 0
        ) == sts.spec.replicas and sts.status.current_revision == sts.status.update_revision:
            return
        time.sleep(2)
    raise AssertionError(f"statefulset {name} not ready in {timeout}s")


def assert_images_present(ns: Namespace) -> None:
    """Fail fast, with the fix, when the cluster cannot find an image (it was never loaded)."""
    for pod in ns.core.list_namespaced_pod(ns.name).items:
        for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
            waiting = status.state.waiting
            if waiting and waiting.reason in {
                "ErrImagePull",
                "ImagePullBackOff",
                "ErrImageNeverPull",
                "InvalidImageName",
            }:
                raise AssertionError(
                    f"{pod.metadata.name} cannot get its image {status.image} ({waiting.reason}): load it "
                    "into the cluster first (make test-k8s does; k8s/README.md shows kind and minikube)"
                )


@contextmanager
def port_forward(ns: Namespace, target: str, remote_port: int) -> Iterator[str]:
    """`kubectl port-forward` to a local free port, yielding its http://127.0.0.1:<port> once it answers."""
    port = free_port()
    forward = subprocess.Popen(
        [ns.kubectl, "port-forward", "--namespace", ns.name, target, f"{port}:{remote_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=3).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert forward.poll() is None, f"kubectl port-forward {target} exited: {forward.communicate()[1]}"
            assert time.monotonic() < deadline, f"the port-forward to {target} never answered"
            time.sleep(0.5)
        yield url
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def cql(ns: Namespace, pod: str, statement: str, consistency: str = "QUORUM") -> str:
    """Run CQL with cqlsh inside a Cassandra pod (the image's cqlsh, the node's own address)."""
    script = f"CONSISTENCY {consistency}; PAGING OFF; {statement}"
    result = ns.exec(
        pod, "cqlsh", "--request-timeout", "60", "-e", script, container="cassandra", timeout=180
    )
    assert result.returncode == 0, f"cqlsh in {pod} failed: {result.stdout}{result.stderr}"
    return result.stdout


def record_figure(name: str, value: float, unit: str, note: str = "") -> None:
    """Keep a measured figure in test-output/e2e-figures.json (and print it) for the report and the README."""
    FIGURES.parent.mkdir(exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = {
        "value": round(value, 2),
        "unit": unit,
        "note": note,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nFIGURE {name}: {value:.1f} {unit} {note}")


def local_cluster_memory_mib() -> tuple[float, float]:
    """(host processes, pods) memory of the local cluster in MiB: the RSS of etcd, the control plane,
    containerd, kubelet and kube-proxy, and the working set of the kubepods cgroup (less inactive cache)."""
    rss_kib = 0
    for pid_file in Path("/run/mnist-cluster/pids").glob("*.pid"):
        status = Path(f"/proc/{pid_file.read_text().strip()}/status")
        if status.exists():
            line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
            rss_kib += int(line.split()[1])
    cgroup = Path("/sys/fs/cgroup/memory/kubepods")
    usage = int((cgroup / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    working_set = usage - int(stat.get("total_inactive_file", 0))
    return rss_kib / 1024, working_set / 2**20
