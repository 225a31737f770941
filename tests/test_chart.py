"""The Helm chart, checked with the real helm and kubeconform in every value set CI renders (defaults and
ci/*.yaml), then object by object: security, probes, selectors, ports, the keyspace-init command, the
values schema."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.settings import Settings
from tests.conftest import ROOT
from tests.helm_tools import (
    CHART,
    VALUE_SETS,
    Rendered,
    kubeconform,
    kubernetes_versions,
    load_values,
    render,
    run_helm,
)

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
WORKLOADS = ("Deployment", "StatefulSet", "Job", "Pod")
# Kinds without a schema in kubernetes-validate (CRDs); their fields are checked by the tests below instead.
CRD_KINDS = ("ServiceMonitor",)


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """The chart rendered with one value set."""
    return render(VALUE_SETS[request.param])


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(object name, pod metadata, pod spec) of every workload, hooks included."""
    found = []
    for obj in rendered.objects:
        if obj["kind"] == "Pod":
            found.append((obj["metadata"]["name"], obj["metadata"], obj["spec"]))
        elif obj["kind"] in WORKLOADS:
            template = obj["spec"]["template"]
            found.append((obj["metadata"]["name"], template["metadata"], template["spec"]))
    return found


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- the real tools -------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_strict_passes(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    if VALUE_SETS[value_set] is not None:
        args += ["--values", str(VALUE_SETS[value_set])]
    result = run_helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", kubernetes_versions())
def test_every_manifest_passes_kubeconform_strict(kube_version: str, tmp_path: Path) -> None:
    """Every value set rendered for `kube_version`, in one kubeconform run (the file names the set)."""
    files = []
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(render(values, kube_version=kube_version).text)
        files.append(path)
    result = kubeconform(files, kube_version, skip_kinds=CRD_KINDS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout, result.stdout


def test_kubeconform_catches_an_invalid_manifest() -> None:
    """Guards the offline schema setup: a broken Deployment must be reported, not silently skipped."""
    manifests = render().text.replace("revisionHistoryLimit:", "revisionHistroyLimit:", 1)
    result = kubeconform(manifests, "1.29.0")
    assert result.returncode != 0
    assert "revisionHistroyLimit" in result.stdout


# --- every object ---------------------------------------------------------------------------------


def test_every_object_carries_the_standard_labels(rendered: Rendered) -> None:
    for obj in rendered.objects:
        labels = obj["metadata"].get("labels", {})
        absent = [label for label in STANDARD_LABELS if label not in labels]
        assert not absent, f"{obj['kind']} {obj['metadata']['name']} lacks {absent}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_every_container_has_resources_and_a_locked_down_security_context(rendered: Rendered) -> None:
    for name, _, spec in pod_specs(rendered):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            assert container["resources"]["requests"]["cpu"], where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where


def test_containers_of_the_service_image_run_on_a_read_only_root_filesystem(rendered: Rendered) -> None:
    image = load_values()["image"]["repository"]
    ours = [
        (name, container, spec)
        for name, _, spec in pod_specs(rendered)
        for container in spec["containers"]
        if container["image"].startswith(image)
    ]
    assert len(ours) >= 2  # the service and the helm test pod, at least
    for name, container, spec in ours:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounted, name
        declared = {volume["name"] for volume in spec.get("volumes", [])}
        assert {mount["name"] for mount in container["volumeMounts"]} <= declared, name


def test_long_running_containers_have_startup_liveness_and_readiness_probes(rendered: Rendered) -> None:
    for obj in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{obj['metadata']['name']}/{container['name']} lacks {probe}"


def test_service_probes_use_healthz_and_readyz_on_the_http_port(rendered: Rendered) -> None:
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_workload_selectors_match_their_pod_labels(rendered: Rendered) -> None:
    for obj in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert matches(selector, obj["spec"]["template"]["metadata"]["labels"]), obj["metadata"]["name"]


def test_services_pdbs_and_policies_select_exactly_one_workload(rendered: Rendered) -> None:
    workloads = rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    selectors = [(svc["metadata"]["name"], svc["spec"]["selector"]) for svc in rendered.of_kind("Service")]
    selectors += [
        (pdb["metadata"]["name"], pdb["spec"]["selector"]["matchLabels"])
        for pdb in rendered.of_kind("PodDisruptionBudget")
    ]
    selectors += [
        (np["metadata"]["name"], np["spec"]["podSelector"]["matchLabels"])
        for np in rendered.of_kind("NetworkPolicy")
    ]
    for name, selector in selectors:
        chosen = [
            w["metadata"]["name"]
            for w in workloads
            if matches(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(chosen) == 1, f"{name} selects {chosen}"


def test_service_ports_target_container_ports(rendered: Rendered) -> None:
    workloads = rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    for service in rendered.of_kind("Service"):
        (workload,) = [
            w
            for w in workloads
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        ports = {
            port["name"]: port["containerPort"]
            for container in workload["spec"]["template"]["spec"]["containers"]
            for port in container["ports"]
        }
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), (
                f"{service['metadata']['name']}: {target} not in {ports}"
            )


def test_service_container_listens_where_the_settings_say(rendered: Rendered) -> None:
    config = rendered.one("ConfigMap", "api")["data"]
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {port["containerPort"] for port in container["ports"]} == {
        int(config["MNIST_PORT"]),
        int(config["MNIST_GRPC_PORT"]),
    }
    assert config["MNIST_HOST"] == "0.0.0.0"


def test_configmap_sets_only_settings_the_service_knows(rendered: Rendered) -> None:
    """A misspelt MNIST_* variable would be silently ignored by the service; catch it here."""
    known = {f"MNIST_{name.upper()}" for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    config = rendered.one("ConfigMap", "api")["data"]
    assert set(config) <= known, set(config) - known
    Settings.model_validate(
        {
            key.removeprefix("MNIST_").lower(): value
            for key, value in config.items()
            if key.startswith("MNIST_")
        }
    )


def test_writable_paths_of_the_settings_are_mounted_volumes(rendered: Rendered) -> None:
    config = rendered.one("ConfigMap", "api")["data"]
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert config["MNIST_SPOOL_DIR"] in mounted
    assert config["PROMETHEUS_MULTIPROC_DIR"] in mounted


def test_durability_and_the_spool_replay_reach_the_service() -> None:
    result = run_helm(
        "template", "x", str(CHART), "--set", "config.durability=disk", "--set", "config.spoolDrainSeconds=90"
    )
    config = next(
        d["data"] for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "ConfigMap" and
        d["data"].get("MNIST_DURABILITY")
    )  # fmt: skip
    assert config["MNIST_DURABILITY"] == "disk"
    assert config["MNIST_SPOOL_DRAIN_S"] == "90"


def test_termination_grace_covers_prestop_gunicorns_graceful_timeout_and_the_spool_replay(
    rendered: Rendered,
) -> None:
    config = rendered.one("ConfigMap", "api")["data"]
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The spool is an emptyDir (it dies with the pod): a stopping worker replays it before it exits.
    spool = next(v for v in spec["volumes"] if v["name"] == "spool")
    assert "emptyDir" in spool
    replay = float(config["MNIST_SPOOL_DRAIN_S"])
    assert replay >= 30, "a stopping pod must get time to replay its spool (issue 9: 835 records lost)"
    grace = int(pre_stop[1]) + int(config["MNIST_GRACEFUL_TIMEOUT_S"]) + replay
    assert spec["terminationGracePeriodSeconds"] > grace


def test_pods_are_annotated_for_prometheus_scraping(rendered: Rendered) -> None:
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_replica_count_is_left_to_the_hpa_when_autoscaling(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    if hpas:
        assert "replicas" not in deployment["spec"]
        assert hpas[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpas[0]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    else:
        assert deployment["spec"]["replicas"] >= 1


# --- Cassandra ------------------------------------------------------------------------------------


def test_store_url_points_at_the_cassandra_the_release_uses(rendered: Rendered) -> None:
    url = rendered.one("ConfigMap", "api")["data"]["MNIST_STORE_URL"]
    assert url.startswith("cassandra://")
    statefulsets = rendered.of_kind("StatefulSet")
    if statefulsets:
        (client,) = [
            svc
            for svc in rendered.of_kind("Service")
            if svc["metadata"]["labels"]["app.kubernetes.io/component"] == "cassandra"
            and svc["spec"].get("clusterIP") != "None"
        ]
        assert f"//{client['metadata']['name']}:9042/" in url
    else:
        assert "cassandra-0.cassandra.db.svc.cluster.local" in url


def test_cassandra_seeds_are_pods_of_the_statefulset(rendered: Rendered) -> None:
    for statefulset in rendered.of_kind("StatefulSet"):
        env = {
            e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        headless = statefulset["spec"]["serviceName"]
        seeds = env["CASSANDRA_SEEDS"].split(",")
        assert seeds
        for ordinal, seed in enumerate(seeds):
            assert seed.startswith(f"{statefulset['metadata']['name']}-{ordinal}.{headless}.")
        assert len(seeds) <= statefulset["spec"]["replicas"]
        (service,) = [s for s in rendered.of_kind("Service") if s["metadata"]["name"] == headless]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True


def test_cassandra_drains_before_stopping_and_checks_cql_for_readiness(rendered: Rendered) -> None:
    for statefulset in rendered.of_kind("StatefulSet"):
        container = statefulset["spec"]["template"]["spec"]["containers"][0]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["nodetool", "drain"]
        readiness = container["readinessProbe"]["exec"]["command"]
        assert readiness[0] == "cqlsh" and "SELECT" in readiness[-1]


def commitlog_init(statefulset: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the init container that writes commitlog_sync, the cassandra container) of a rendered StatefulSet."""
    spec = statefulset["spec"]["template"]["spec"]
    (init,) = [c for c in spec["initContainers"] if c["name"] == "commitlog-config"]
    (cassandra,) = [c for c in spec["containers"] if c["name"] == "cassandra"]
    return init, cassandra


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({}, {"COMMITLOG_SYNC": "periodic", "COMMITLOG_SYNC_PERIOD": "10000ms"}),
        ({"cassandra.commitlogSync": "batch"}, {"COMMITLOG_SYNC": "batch"}),
        (
            {"cassandra.commitlogSync": "group", "cassandra.commitlogSyncGroupWindow": "5ms"},
            {"COMMITLOG_SYNC": "group", "COMMITLOG_SYNC_GROUP_WINDOW": "5ms"},
        ),
    ],
    ids=["default-periodic", "batch", "group"],
)
def test_commitlog_sync_is_written_into_the_config_cassandra_starts_with(
    sets: dict[str, str], expected: dict[str, str]
) -> None:
    statefulset = render(sets=sets).one("StatefulSet", "cassandra")
    init, cassandra = commitlog_init(statefulset)
    env = {e["name"]: e["value"] for e in init["env"]}
    assert expected.items() <= env.items()
    # The same image as the node, so the copy starts from that image's own /etc/cassandra.
    assert init["image"] == cassandra["image"]
    script = init["args"][0]
    assert "cp -R /etc/cassandra/. /config/" in script
    assert "commitlog_sync: $COMMITLOG_SYNC" in script
    # The node reads the edited copy: the init container's /config is the node's /etc/cassandra.
    (config_in,) = [m for m in init["volumeMounts"] if m["mountPath"] == "/config"]
    (config_out,) = [m for m in cassandra["volumeMounts"] if m["mountPath"] == "/etc/cassandra"]
    assert config_in["name"] == config_out["name"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[config_in["name"]]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_only_clients_of_cassandra_reach_its_cql_port() -> None:
    rendered = render(VALUE_SETS["production"])
    policy = rendered.one("NetworkPolicy", "cassandra")
    cql_rule = next(rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "cql")
    allowed = cql_rule["from"][0]["podSelector"]["matchLabels"]

    def labels_of(kind: str, component: str) -> dict[str, str]:
        obj = rendered.one(kind, component)
        return obj["metadata"]["labels"] if kind == "Pod" else obj["spec"]["template"]["metadata"]["labels"]

    assert matches(allowed, labels_of("Deployment", "api"))
    assert matches(allowed, labels_of("Job", "keyspace-init"))
    assert not matches(allowed, labels_of("Pod", "test"))
    assert not matches(allowed, labels_of("StatefulSet", "cassandra"))


# --- keyspace-init Job -----------------------------------------------------------------------------


def test_keyspace_init_job_is_a_post_install_and_post_upgrade_hook(rendered: Rendered) -> None:
    job = rendered.one("Job", "keyspace-init")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["activeDeadlineSeconds"] > 0


def test_keyspace_init_job_runs_the_clis_own_db_init(rendered: Rendered) -> None:
    """The Job's arguments must parse with the real `mnist db init` (click parses them, runs nothing)."""
    from service.cli import main
    from service.store.cassandra.url import Replication

    container = rendered.one("Job", "keyspace-init")["spec"]["template"]["spec"]["containers"][0]
    command = container["command"] + container.get("args", [])
    assert command[:3] == ["mnist", "db", "init"], command
    init = main.commands["db"].commands["init"]  # type: ignore[attr-defined]
    params = init.make_context("init", list(command[3:])).params
    assert params["timeout"] >= 60  # it waits for Cassandra itself
    assert Replication.parse(params["replication"]).per_dc


def test_service_creates_the_same_keyspace_as_the_job_if_it_gets_there_first(rendered: Rendered) -> None:
    """The store creates a missing keyspace from its URL's replication; it must match the Job's."""
    from service.store.cassandra.url import parse_url

    container = rendered.one("Job", "keyspace-init")["spec"]["template"]["spec"]["containers"][0]
    job_replication = container["command"][container["command"].index("--replication") + 1]
    url = parse_url(rendered.one("ConfigMap", "api")["data"]["MNIST_STORE_URL"])
    assert url.replication.per_dc == parse_replication(job_replication)


def parse_replication(text: str) -> dict[str, int]:
    return {dc: int(n) for dc, n in (part.split(":") for part in text.split(","))}


def test_keyspace_init_job_gets_the_service_settings_and_image(rendered: Rendered) -> None:
    job = rendered.one("Job", "keyspace-init")["spec"]["template"]["spec"]["containers"][0]
    service = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == service["image"]
    assert job["envFrom"] == service["envFrom"]
    credentials = [e for e in service.get("env", []) if e["name"].startswith("MNIST_CASSANDRA_")]
    assert job.get("env", []) == credentials


def test_replication_defaults_to_min_of_nodes_and_three() -> None:
    for nodes, expected in ((1, 1), (2, 2), (3, 3), (5, 3)):
        job = render(sets={"cassandra.replicaCount": str(nodes)}).one("Job", "keyspace-init")
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert parse_replication(command[command.index("--replication") + 1]) == {"dc1": expected}


def test_replication_per_datacenter_comes_from_the_values() -> None:
    # Two datacenters need an external cluster: the in-chart Cassandra is one (validateValues refuses others).
    external = {
        "cassandra.enabled": "false",
        "externalCassandra.hosts[0]": "db",
        "externalCassandra.datacenter": "eu",
    }
    job = render(sets=external, set_json={"store.replication": {"eu": 3, "us": 2}}).one(
        "Job", "keyspace-init"
    )
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--replication") + 1] == "eu:3,us:2"


def test_credentials_come_from_the_chart_secret_or_an_existing_one() -> None:
    made = render(sets={"auth.username": "mnist", "auth.password": "s3cret"})
    secret = made.one("Secret", "api")
    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cret"
    env = {e["name"]: e for e in made.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MNIST_CASSANDRA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]

    existing = render(VALUE_SETS["external-cassandra"])
    assert not existing.of_kind("Secret")
    env = {
        e["name"]: e for e in existing.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MNIST_CASSANDRA_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "mnist-cassandra-credentials",
        "key": "user",
    }


def test_tls_files_come_from_a_secret_mounted_read_only_in_the_service_and_the_init_job() -> None:
    made = render(
        sets={
            "auth.tls.enabled": "true",
            "auth.tls.existingSecret": "cassandra-client-tls",
            "auth.tls.keyPasswordKey": "passphrase",
        }
    )
    data = made.one("ConfigMap", "api")["data"]
    settings = {k: data[f"MNIST_CASSANDRA_TLS_{k}"] for k in ("CA", "CERT", "KEY")}
    assert settings == {
        "CA": "/etc/mnist/cassandra-tls/ca.crt",
        "CERT": "/etc/mnist/cassandra-tls/tls.crt",
        "KEY": "/etc/mnist/cassandra-tls/tls.key",
    }
    for kind in ("Deployment", "Job"):
        pod = made.one(kind, "api" if kind == "Deployment" else "keyspace-init")["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "cassandra-tls")
        assert volume["secret"] == {"secretName": "cassandra-client-tls", "defaultMode": 0o440}
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "cassandra-tls")
        assert mount == {"name": "cassandra-tls", "mountPath": "/etc/mnist/cassandra-tls", "readOnly": True}
        env = {e["name"]: e for e in container["env"]}
        assert env["MNIST_CASSANDRA_TLS_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "cassandra-client-tls",
            "key": "passphrase",
        }
    # TLS without a client certificate: the CA only.
    data = render(
        sets={
            "auth.tls.enabled": "true",
            "auth.tls.existingSecret": "cassandra-ca",
            "auth.tls.certKey": "",
            "auth.tls.keyKey": "",
        }
    ).one("ConfigMap", "api")["data"]
    assert "MNIST_CASSANDRA_TLS_CA" in data and "MNIST_CASSANDRA_TLS_CERT" not in data
    assert not [k for k in render().one("ConfigMap", "api")["data"] if k.startswith("MNIST_CASSANDRA_TLS")]


# --- optional objects -----------------------------------------------------------------------------


def test_service_monitor_scrapes_the_service_http_port() -> None:
    rendered = render(VALUE_SETS["production"])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service", "api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_grafana_dashboard_configmap_carries_the_dashboard_file() -> None:
    dashboard = CHART / "dashboards" / "mnist-service.json"
    assert not render().of_kind("ConfigMap")[1:], "the dashboard must be off by default"
    configmap = render(sets={"grafanaDashboard.enabled": "true"}).one("ConfigMap", "monitoring")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["mnist-service.json"]) == json.loads(dashboard.read_text())


def test_ingress_routes_to_the_service_port() -> None:
    rendered = render(VALUE_SETS["production"])
    ingress = rendered.one("Ingress")
    service = rendered.one("Service", "api")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


def test_helm_test_pod_predicts_through_the_service(rendered: Rendered) -> None:
    pod = rendered.one("Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    service = rendered.one("Service", "api")
    url = {e["name"]: e["value"] for e in container["env"]}["MNIST_TEST_URL"]
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    compile(container["args"][0], "predict-test.py", "exec")


# --- values and their schema ----------------------------------------------------------------------


def test_default_values_and_every_ci_value_set_satisfy_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = load_values()
    jsonschema.validate(defaults, schema)
    for path in (p for p in VALUE_SETS.values() if p is not None):
        jsonschema.validate(deep_merge(defaults, yaml.safe_load(path.read_text())), schema)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            deep_merge(base[key], value)
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
        )
    return merged


BAD_VALUES = {
    "negative replicas": "replicaCount=-1",
    "unknown pull policy": "image.pullPolicy=Sometimes",
    "misspelt top-level key": "replicas=3",
    "unknown model": "config.defaultModel=resnet",
    "zero workers": "config.workers=0",
    "bad log level": "config.logLevel=VERBOSE",
    "keyspace with a dash": "store.keyspace=mnist-prod",
    "unknown consistency": "store.consistency=MOSTLY",
    "port out of range": "service.port=70000",
    "unknown service type": "service.type=External",
    "cpu target above 100%": "autoscaling.targetCPUUtilizationPercentage=150",
    "heap without unit": "cassandra.jvm.maxHeapSize=4096",
    "unknown anti-affinity": "cassandra.podAntiAffinity=strict",
    "replication of zero": "store.replication.dc1=0",
    "external Cassandra without hosts": "cassandra.enabled=false",
    "bad digest": "image.digest=latest",
    "unknown commit log sync": "cassandra.commitlogSync=always",
    "sync period without unit": "cassandra.commitlogSyncPeriod=10000",
    "unknown durability": "config.durability=fsync",
    "negative spool replay": "config.spoolDrainSeconds=-1",
}


@pytest.mark.parametrize("bad", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_values_schema_rejects_bad_values(bad: str) -> None:
    result = run_helm("template", "x", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr


# --- contradictory values: mnist.validateValues (templates/_helpers.tpl, run from NOTES.txt) ------------

# name -> (--set arguments, a fragment of the message that must explain the contradiction)
CONTRADICTIONS: dict[str, tuple[list[str], str]] = {
    "no Cassandra at all": (
        ["cassandra.enabled=false"],
        "externalCassandra.hosts: cassandra.enabled=false deploys no Cassandra",
    ),
    "HPA floor above its ceiling": (
        [
            "autoscaling.enabled=true",
            "autoscaling.minReplicas=5",
            "autoscaling.maxReplicas=3",
            "replicaCount=3",
        ],
        "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (3)",
    ),
    "replicaCount above the HPA ceiling": (
        [
            "autoscaling.enabled=true",
            "autoscaling.minReplicas=1",
            "autoscaling.maxReplicas=2",
            "replicaCount=4",
        ],
        "replicaCount (4) is above autoscaling.maxReplicas (2)",
    ),
    "PDB that lets no pod go": (
        ["podDisruptionBudget.maxUnavailable=0"],
        "podDisruptionBudget.maxUnavailable is 0",
    ),
    "PDB that lets no pod go, as a percentage": (
        ["podDisruptionBudget.maxUnavailable=0%"],
        "podDisruptionBudget.maxUnavailable is 0%",
    ),
    "rollout that can neither add nor remove a pod": (
        ["updateStrategy.rollingUpdate.maxSurge=0", "updateStrategy.rollingUpdate.maxUnavailable=0"],
        "maxSurge and maxUnavailable are both 0",
    ),
    "more replicas than in-chart nodes": (
        ["store.replication.dc1=3", "cassandra.replicaCount=2"],
        "store.replication.dc1 (3) is above cassandra.replicaCount (2)",
    ),
    "replicas in a datacenter the in-chart Cassandra lacks": (
        ["store.replication.eu=1"],
        'the in-chart Cassandra has the one datacenter cassandra.datacenter=dc1, so replicas in "eu"',
    ),
    "no replicas in the external local datacenter": (
        ["cassandra.enabled=false", "externalCassandra.hosts[0]=db", "store.replication.us=3"],
        "places no replicas in externalCassandra.datacenter=dc1",
    ),
    "consistency THREE on one replica": (
        ["store.consistency=THREE"],
        "store.consistency=THREE needs 3 replicas of every row, but the keyspace replication (dc1:1) keeps 1",
    ),
    "consistency TWO on one replica of an external cluster": (
        [
            "cassandra.enabled=false",
            "externalCassandra.hosts[0]=db",
            "store.replication.dc1=1",
            "store.consistency=TWO",
        ],
        "store.consistency=TWO needs 2 replicas",
    ),
    "credentials and an existing secret": (
        ["auth.existingSecret=creds", "auth.username=mnist", "auth.password=s3cret"],
        "auth.username/auth.password and auth.existingSecret are both set",
    ),
    "user without password": (["auth.username=mnist"], "auth.password is empty while auth.username is set"),
    "TLS without its Secret": (["auth.tls.enabled=true"], "auth.tls.existingSecret is empty"),
    "client certificate without its key": (
        ["auth.tls.enabled=true", "auth.tls.existingSecret=tls", "auth.tls.keyKey="],
        "auth.tls.certKey and auth.tls.keyKey must both be set",
    ),
    "password without user": (["auth.password=s3cret"], "auth.username is empty while auth.password is set"),
    "keyspace-init Job killed before it gives up": (
        ["keyspaceInit.waitSeconds=600", "keyspaceInit.activeDeadlineSeconds=300"],
        "keyspaceInit.waitSeconds (600) is not below keyspaceInit.activeDeadlineSeconds (300)",
    ),
    "spool volume smaller than the spool": (
        ["volumes.spoolSizeLimit=128Mi"],
        "volumes.spoolSizeLimit (128Mi) is not above config.spoolMaxBytes (268435456 bytes)",
    ),
    "spool volume in plain bytes smaller than the spool": (
        ["volumes.spoolSizeLimit=1000000", "config.spoolMaxBytes=2000000"],
        "volumes.spoolSizeLimit (1000000) is not above config.spoolMaxBytes (2000000 bytes)",
    ),
    "Cassandra heap as large as its memory limit": (
        ["cassandra.jvm.maxHeapSize=2G"],
        "cassandra.jvm.maxHeapSize (2G) is not below cassandra.resources.limits.memory (2Gi)",
    ),
    "young generation as large as the heap": (
        ["cassandra.jvm.heapNewSize=1024M"],
        "cassandra.jvm.heapNewSize (1024M) is not below cassandra.jvm.maxHeapSize (1024M)",
    ),
    "scrape timeout above the interval": (
        [
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=10s",
            "metrics.serviceMonitor.scrapeTimeout=1m",
        ],
        "metrics.serviceMonitor.scrapeTimeout (1m) is above metrics.serviceMonitor.interval (10s)",
    ),
    "Ingress without hosts": (["ingress.enabled=true", "ingress.hosts=null"], "ingress.hosts is empty"),
    "node port on a ClusterIP Service": (
        ["service.nodePort=30800"],
        "service.nodePort (30800) is set but service.type is ClusterIP",
    ),
    "NetworkPolicy that shuts out the Ingress controller": (
        ["networkPolicy.enabled=true", "networkPolicy.allowExternal=false", "ingress.enabled=true"],
        "the NetworkPolicy would block the Ingress controller",
    ),
}


def render_failure(sets: list[str], *extra: str) -> str:
    """stderr of a `helm template` that must fail; the schema is skipped so only validateValues speaks."""
    args = ["template", "x", str(CHART), "--skip-schema-validation", *extra]
    for value in sets:
        args += ["--set", value]
    result = run_helm(*args, check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    return result.stderr


@pytest.mark.parametrize("name", list(CONTRADICTIONS))
def test_contradictory_values_fail_the_render_with_their_message(name: str) -> None:
    sets, message = CONTRADICTIONS[name]
    stderr = render_failure(sets)
    assert "VALUES VALIDATION: 1 setting(s) contradict" in stderr, stderr
    assert message in stderr, stderr


@pytest.mark.parametrize("name", [n for n in CONTRADICTIONS if n != "no Cassandra at all"])
def test_contradictions_also_fail_with_the_schema_checked(name: str) -> None:
    """The schema accepts each value on its own; validateValues is what refuses the combination."""
    sets, message = CONTRADICTIONS[name]
    args = ["template", "x", str(CHART)] + [arg for value in sets for arg in ("--set", value)]
    result = run_helm(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_every_contradiction_is_reported_in_one_run() -> None:
    stderr = render_failure(
        [*CONTRADICTIONS["user without password"][0], *CONTRADICTIONS["PDB that lets no pod go"][0]]
    )
    assert "VALUES VALIDATION: 2 setting(s) contradict" in stderr, stderr
    assert CONTRADICTIONS["user without password"][1] in stderr
    assert CONTRADICTIONS["PDB that lets no pod go"][1] in stderr


@pytest.mark.parametrize("value_set", [*VALUE_SETS, "k8s"])
def test_shipped_value_sets_have_no_contradictions(value_set: str) -> None:
    """Defaults, ci/*.yaml and k8s/values.yaml (the plain manifests) render with validateValues on."""
    values = ROOT / "k8s" / "values.yaml" if value_set == "k8s" else VALUE_SETS[value_set]
    args = ["template", "x", str(CHART)] + (["--values", str(values)] if values else [])
    result = run_helm(*args, check=False)
    assert result.returncode == 0, result.stderr


def test_every_values_key_is_documented_in_place_and_in_the_readme() -> None:
    """Each value has a `# --` comment above itself or an enclosing key, and that key is in the README."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    readme = (CHART / "README.md").read_text()
    path: list[tuple[int, str, bool]] = []  # (indent, key, documented) from the top level down
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        above = number - 1
        while (
            above >= 0
            and lines[above].strip().startswith("#")
            and not lines[above].strip().startswith("# --")
        ):
            above -= 1  # a `# --` comment may run over several lines
        documented = above >= 0 and lines[above].strip().startswith("# --")
        path = [entry for entry in path if entry[0] < indent] + [(indent, match.group(2), documented)]
        if line.rstrip().endswith(":"):
            continue  # a section; its leaves are checked
        keys = [".".join(k for _, k, _ in path[: i + 1]) for i in range(len(path))]
        owners = [key for key, (_, _, doc) in zip(keys, path, strict=True) if doc]
        assert owners, f"values.yaml: {keys[-1]} has no `# --` comment above it or above an enclosing key"
        assert f"`{owners[-1]}`" in readme, f"README.md values table lacks {owners[-1]}: run helm-docs"


def test_readme_lists_no_key_the_values_lack() -> None:
    readme = (CHART / "README.md").read_text()
    values = load_values()
    for key in re.findall(r"^\| `([\w.-]+)` \|", readme, flags=re.M):
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, (
                f"README.md documents {key}, values.yaml has no such key"
            )
            node = node[part]


def test_chart_metadata_follows_helm_v2() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["type"] == "application"
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M)
    assert version and chart["appVersion"] == version.group(1)


def test_values_files_are_valid_yaml_mappings() -> None:
    for path in [CHART / "values.yaml", *(p for p in VALUE_SETS.values() if p)]:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_grpc_port_is_exposed_and_can_be_turned_off() -> None:
    """The Service, the NetworkPolicy and the container carry the gRPC port; probes stay on HTTP."""
    on = render(sets={"networkPolicy.enabled": "true"})
    service = on.one("Service", "api")
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port == {
        "name": "grpc",
        "port": 8001,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }
    (container,) = on.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in container["ports"]
    assert on.one("ConfigMap", "api")["data"]["MNIST_GRPC_PORT"] == "8001"
    policy = on.one("NetworkPolicy", "api")
    assert {"port": "grpc", "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"

    off = render(sets={"networkPolicy.enabled": "true", "service.grpcPort": "0"})
    assert [p["name"] for p in off.one("Service", "api")["spec"]["ports"]] == ["http"]
    (container,) = off.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert off.one("ConfigMap", "api")["data"]["MNIST_GRPC_PORT"] == "0"
    assert [p["port"] for p in off.one("NetworkPolicy", "api")["spec"]["ingress"][0]["ports"]] == ["http"]


def test_tracing_values_set_the_standard_otel_variables() -> None:
    """Off by default (no OTEL_* at all); an endpoint turns it on with the sampler and service name."""
    (off,) = render().one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [e for e in off.get("env", []) if e["name"].startswith("OTEL_")]
    endpoint = "http://otel-collector.observability:4317"
    on = render(sets={"tracing.otlpEndpoint": endpoint, "tracing.samplerArg": "0.5"})
    (container,) = on.one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert env["OTEL_SERVICE_NAME"] == "mnist-service"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "true"
