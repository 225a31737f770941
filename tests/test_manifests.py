"""k8s/: the plain manifests are exactly what the chart renders today, and they pass kubeconform."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.helm_tools import kubeconform, kubernetes_versions, tool

K8S = ROOT / "k8s"


def test_plain_manifests_are_in_sync_with_the_chart(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "render-manifests.sh"), str(tmp_path)],
        cwd=ROOT,
        env={"HELM": tool("helm"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    fresh = (tmp_path / "mnist-service.yaml").read_text()
    committed = (K8S / "mnist-service.yaml").read_text()
    assert committed == fresh, "k8s/mnist-service.yaml is stale: run `make manifests` and commit the result"


def test_plain_manifests_pass_kubeconform_strict() -> None:
    manifests = (K8S / "mnist-service.yaml").read_text()
    for version in kubernetes_versions():
        result = kubeconform(manifests, version)
        assert result.returncode == 0, result.stdout + result.stderr


def test_plain_manifests_run_the_keyspace_init_job_but_no_test_pod() -> None:
    objects = [doc for doc in yaml.safe_load_all((K8S / "mnist-service.yaml").read_text()) if doc]
    kinds = [obj["kind"] for obj in objects]
    assert kinds.count("Job") == 1
    assert "Pod" not in kinds
    assert {"Deployment", "StatefulSet", "ConfigMap", "Service"} <= set(kinds)


def test_kind_config_maps_a_host_port_to_the_node_port_the_guide_uses() -> None:
    config = yaml.safe_load((K8S / "kind-cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    mappings = config["nodes"][0]["extraPortMappings"]
    guide = (K8S / "README.md").read_text()
    for mapping in mappings:
        assert f"service.nodePort={mapping['containerPort']}" in guide
        assert f"127.0.0.1:{mapping['hostPort']}" in guide
