"""Production-like values (tests/e2e/values/production-like.yaml: 3 Cassandra nodes at replication 3, an
autoscaled service of 2+ pods, disruption budgets) under a steady ~50 predictions/s: a rolling `helm upgrade`,
losing a service pod, losing a Cassandra pod. Each must fail no request (the load generator retries only
connections that never opened: tests/e2e/steady_load.py) and store every answered prediction exactly once.

The load goes to the NodePort on the node's address, through kube-proxy, so it follows the endpoints as pods
come and go; the node address is the local cluster's own (or kind's / minikube's node), never off the machine.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import LOCAL_CLUSTER, Images
from tests.e2e.digits import drawn_one
from tests.e2e.kube import (
    Namespace,
    assert_images_present,
    cql,
    helm_install_args,
    local_cluster_memory_mib,
    pod_ready,
    record_figure,
    wait_rollout,
    wait_statefulset_ready,
)
from tests.e2e.steady_load import LoadResult, SteadyLoad
from tests.helm_tools import CHART, tool

pytestmark = [pytest.mark.k8s, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

RELEASE = "mnist-service"
VALUES = Path(__file__).parent / "values" / "production-like.yaml"
INSTALL_TIMEOUT_S = 1200
RATE = 50.0
API = "app.kubernetes.io/component=api"
CASSANDRA = f"{RELEASE}-cassandra"


@dataclass
class Production:
    ns: Namespace
    url: str
    values: list[str]


@pytest.fixture(scope="module")
def production(new_namespace: Callable[[str], Namespace], images: Images) -> Iterator[Production]:
    ns = new_namespace("prod")
    values = ["--values", str(VALUES), *images.service, *images.cassandra]
    started = time.monotonic()
    install = subprocess.Popen(
        [tool("helm"), *helm_install_args(RELEASE, values, INSTALL_TIMEOUT_S), "--namespace", ns.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while install.poll() is None and time.monotonic() < started + INSTALL_TIMEOUT_S + 60:
            assert_images_present(ns)
            time.sleep(2)
        out, err = install.communicate(timeout=60)
        assert install.returncode == 0, out + err
        record_figure(
            "production-like: helm install --wait --wait-for-jobs (3 Cassandra nodes)",
            time.monotonic() - started,
            "s",
        )
        service = ns.core.read_namespaced_service(RELEASE, ns.name)
        node = ns.core.list_node().items[0]
        address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
        url = f"http://{address}:{service.spec.ports[0].node_port}"
        first = requests.post(
            f"{url}/predict", data=drawn_one(), headers={"Content-Type": "image/png"}, timeout=30
        )
        assert first.status_code == 200, first.text
        yield Production(ns, url, values)
        if LOCAL_CLUSTER:
            host, pods = local_cluster_memory_mib()
            note = f"(control plane and node processes {host:.0f} MiB + pods {pods:.0f} MiB)"
            record_figure("local cluster memory after the production-like tests", host + pods, "MiB", note)
    finally:
        if install.poll() is None:
            install.kill()
        ns.helm("uninstall", RELEASE, "--wait", timeout=300)


def stored_request_ids(production: Production) -> Counter[str]:
    """How often each e2e request id appears in Cassandra's predictions table (read at QUORUM)."""
    out = cql(production.ns, f"{CASSANDRA}-0", "SELECT request_id, id FROM mnist.predictions;")
    return Counter(re.findall(r"^\s*(e2e-[0-9a-f]{32})\s*\|", out, re.MULTILINE))


def assert_nothing_failed_or_lost(production: Production, load: LoadResult, what: str) -> None:
    """0 failed requests; every answered request stored exactly once; a failed one at most once."""
    assert len(load.outcomes) >= RATE * 10, f"{what}: the load barely ran ({load.summary()})"
    assert not load.failed, f"{what}: {load.summary()}"
    deadline = time.monotonic() + 120  # the write-behind queue and spool drain into Cassandra
    while True:
        stored = stored_request_ids(production)
        missing = [o.request_id for o in load.answered if stored[o.request_id] == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    duplicated = [o.request_id for o in load.outcomes if stored[o.request_id] > 1]
    assert not missing, f"{what}: {len(missing)} of {len(load.answered)} answered predictions never stored"
    assert not duplicated, f"{what}: {len(duplicated)} requests stored more than once"


def test_hpa_shows_current_cpu_and_the_budgets_allow_one_disruption(production: Production) -> None:
    ns = production.ns

    def current_cpu() -> int | None:
        hpa = ns.autoscaling.read_namespaced_horizontal_pod_autoscaler(RELEASE, ns.name)
        for metric in hpa.status.current_metrics or []:
            if (
                metric.resource
                and metric.resource.name == "cpu"
                and metric.resource.current.average_utilization is not None
            ):
                return int(metric.resource.current.average_utilization)
        return None

    deadline = time.monotonic() + 180  # metrics-server scrapes every 15 s; the HPA syncs every 15 s
    while current_cpu() is None:
        assert time.monotonic() < deadline, "the HPA never reported current CPU (is metrics-server up?)"
        time.sleep(5)
    shown = ns.run_kubectl("get", "hpa", RELEASE).stdout
    assert re.search(r"cpu: \d+%/80%", shown), shown
    budgets = {pdb["metadata"]["name"]: pdb for pdb in ns.run_kubectl_json("get", "pdb")}
    assert set(budgets) == {RELEASE, CASSANDRA}, set(budgets)
    for name, pdb in budgets.items():
        assert pdb["status"]["disruptionsAllowed"] == 1, (name, pdb["status"])


def test_rolling_upgrade_under_load_fails_nothing_and_loses_nothing(production: Production) -> None:
    ns = production.ns
    with SteadyLoad(production.url, rate=RATE).running() as load:
        time.sleep(5)
        started = time.monotonic()
        upgrade = ns.helm(
            "upgrade", RELEASE, str(CHART), *production.values, "--reuse-values", "--wait",
            "--timeout", "600s",
            "--set-string", f"podAnnotations.e2e-rollout={uuid.uuid4().hex[:8]}",
            timeout=660,
        )  # fmt: skip
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        wait_rollout(ns, RELEASE)
        record_figure("production-like: rolling helm upgrade under 50/s", time.monotonic() - started, "s")
        time.sleep(5)
    assert_nothing_failed_or_lost(production, load, "rolling upgrade")


def test_losing_a_service_pod_under_load_fails_nothing_and_loses_nothing(production: Production) -> None:
    ns = production.ns
    victim = ns.pods(API)[0].metadata.name
    with SteadyLoad(production.url, rate=RATE).running() as load:
        time.sleep(5)
        ns.core.delete_namespaced_pod(victim, ns.name)
        wait_rollout(ns, RELEASE)
        time.sleep(5)
    assert_nothing_failed_or_lost(production, load, f"deleting {victim}")


def test_losing_a_cassandra_pod_under_load_fails_nothing_loses_nothing_duplicates_nothing(
    production: Production,
) -> None:
    ns = production.ns
    victim = f"{CASSANDRA}-1"
    old_uid = ns.core.read_namespaced_pod(victim, ns.name).metadata.uid
    with SteadyLoad(production.url, rate=RATE).running() as load:
        time.sleep(5)
        started = time.monotonic()
        ns.core.delete_namespaced_pod(victim, ns.name)
        deadline = started + 600
        while True:
            pod = next(
                (p for p in ns.pods("app.kubernetes.io/component=cassandra") if p.metadata.name == victim),
                None,
            )
            if pod is not None and pod.metadata.uid != old_uid and pod_ready(pod):
                break
            assert time.monotonic() < deadline, f"{victim} did not come back Ready in 600s"
            time.sleep(2)
        record_figure(
            "production-like: Cassandra pod replacement (delete to Ready) under 50/s",
            time.monotonic() - started,
            "s",
        )
        wait_statefulset_ready(ns, CASSANDRA)
        time.sleep(5)
    assert_nothing_failed_or_lost(production, load, f"deleting {victim}")
