"""The chart's model lifecycle parts, rendered by the real helm: models from a PersistentVolumeClaim (seeded
from the image, mounted read-only where the settings look), the lifecycle settings in the ConfigMap, and the
retraining CronJob from the trainer image. kubeconform and the generic checks of tests/test_chart.py run on
ci/lifecycle-values.yaml too."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helm_tools import CHART, RELEASE, Rendered, render, run_helm

LIFECYCLE = CHART / "ci" / "lifecycle-values.yaml"
ADMIN_SECRET = f"{RELEASE}-admin"  # fullname is the release name when it holds the chart name


@pytest.fixture(scope="module")
def lifecycle() -> Rendered:
    return render(LIFECYCLE)


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    return dict(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_by_default_the_models_come_from_the_image_and_nothing_retrains() -> None:
    rendered = render()
    assert not rendered.of_kind("PersistentVolumeClaim") and not rendered.of_kind("CronJob")
    config = rendered.one("ConfigMap", "api")["data"]
    assert "MNIST_MODEL_DIR" not in config  # the image's own /opt/mnist/models
    assert config["MNIST_MODEL_POLL_S"] == "10" and config["MNIST_MODEL_VERSION_POLICY"] == "latest"
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert "models" not in {v["name"] for v in spec["volumes"]} and "initContainers" not in spec


def test_the_models_claim_is_created_kept_on_uninstall_and_sized_by_the_values(lifecycle: Rendered) -> None:
    claim = lifecycle.one("PersistentVolumeClaim", "models")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_the_service_reads_the_claim_read_only_where_the_settings_point(lifecycle: Rendered) -> None:
    config = lifecycle.one("ConfigMap", "api")["data"]
    spec = lifecycle.one("Deployment")["spec"]["template"]["spec"]
    claim = lifecycle.one("PersistentVolumeClaim", "models")["metadata"]["name"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": claim}} in spec["volumes"]
    mount = _mounts(spec["containers"][0])["models"]
    assert mount["mountPath"] == config["MNIST_MODEL_DIR"] and mount["readOnly"] is True
    assert config["MNIST_MODEL_ROUTING"] == "cnn: 1=90, 2=10" and config["MNIST_MODEL_SHADOW"] == "cnn: 2"


def test_the_seed_init_container_copies_versions_beside_and_renames_them(lifecycle: Rendered) -> None:
    config = lifecycle.one("ConfigMap", "api")["data"]
    (seed,) = lifecycle.one("Deployment")["spec"]["template"]["spec"]["initContainers"]
    script = seed["command"][-1]
    assert "/opt/mnist/models/*/*/" in script and "continue" in script  # never overwrites a version
    assert script.index("cp -R") < script.index("mv ")  # copied under a dot name, then renamed
    mount = _mounts(seed)["models"]
    assert mount["mountPath"] == config["MNIST_MODEL_DIR"] and not mount.get("readOnly")
    assert seed["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_existing_claim_is_used_and_none_created() -> None:
    rendered = render(
        sets={"models.persistence.enabled": "true", "models.persistence.existingClaim": "shared"}
    )
    assert not rendered.of_kind("PersistentVolumeClaim")
    volumes = rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "shared"}} in volumes


def test_the_retrain_cronjob_runs_the_cli_on_the_release_store_and_models(lifecycle: Rendered) -> None:
    cronjob = lifecycle.one("CronJob", "retrain")
    config = lifecycle.one("ConfigMap", "api")["data"]
    assert cronjob["spec"]["schedule"] == "30 2 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"  # two runs would both write "the next version"
    pod = _pod(cronjob)
    (container,) = pod["containers"]
    assert container["image"].startswith("localhost/mnist-service-trainer:")
    command = container["command"]
    assert command[:4] == ["mnist", "retrain", "--model", "cnn"]
    assert command[command.index("--from") + 1] == config["MNIST_STORE_URL"]
    assert command[command.index("--model-dir") + 1] == config["MNIST_MODEL_DIR"]
    assert command[-4:] == ["--epochs", "3", "--steps-per-epoch", "100"]
    claim = lifecycle.one("PersistentVolumeClaim", "models")["metadata"]["name"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": claim}} in pod["volumes"]
    assert not _mounts(container)["models"].get("readOnly")  # it writes the new version
    configmap = lifecycle.one("ConfigMap", "api")["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": configmap}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MNIST_SPOOL_DIR"].startswith("/tmp/")  # writable: the store client opens its spool there
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert any(key.endswith("-cassandra-client") for key in labels)  # through the Cassandra NetworkPolicy


def test_the_retrain_pod_is_locked_down_like_the_others(lifecycle: Rendered) -> None:
    pod = _pod(lifecycle.one("CronJob", "retrain"))
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_mnist_is_downloaded_first_unless_a_data_claim_holds_it(lifecycle: Rendered) -> None:
    (download,) = _pod(lifecycle.one("CronJob", "retrain"))["initContainers"]
    assert download["command"][:2] == ["mnist", "download"]
    with_claim = render(LIFECYCLE, sets={"retrain.dataClaim": "mnist-data"})
    pod = _pod(with_claim.one("CronJob", "retrain"))
    assert "initContainers" not in pod
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "mnist-data", "readOnly": True}


def test_retraining_without_the_models_claim_fails_the_render() -> None:
    result = run_helm("template", "x", str(CHART), "--set", "retrain.enabled=true", check=False)
    assert result.returncode != 0
    assert "retrain.enabled is true but models.persistence.enabled is false" in result.stderr


@pytest.mark.parametrize(
    "bad",
    [
        {"models": {"versionPolicy": "newest"}},
        {"models": {"routing": "cnn 1=90"}},
        {"models": {"shadow": "cnn: two"}},
        {"models": {"pollSeconds": -1}},
        {"models": {"persistence": {"accessModes": ["ReadWriteSometimes"]}}},
        {"retrain": {"schedule": "nightly"}},
        {"retrain": {"model": "resnet"}},
    ],
)
def test_the_schema_rejects_bad_lifecycle_values(bad: dict[str, Any]) -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, part in bad.items():
        for sub, value in part.items():
            if isinstance(value, dict):
                values[key][sub].update(value)
            else:
                values[key][sub] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)


def test_the_retrain_pod_gets_the_store_credentials_the_service_gets() -> None:
    rendered = render(LIFECYCLE, sets={"auth.username": "mnist", "auth.password": "secret"})
    service = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    (retrain,) = _pod(rendered.one("CronJob", "retrain"))["containers"]
    credentials = [e for e in service if e["name"].startswith("MNIST_CASSANDRA_")]
    assert credentials and all(e in retrain["env"] for e in credentials)


def _admin_env(rendered: Rendered) -> list[dict[str, Any]]:
    env = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return [e for e in env if e["name"] == "MNIST_ADMIN_TOKEN"]


def _secrets(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}


def test_the_admin_token_is_off_by_default() -> None:
    rendered = render()
    assert not _admin_env(rendered)
    assert not any(name.endswith("-admin") for name in _secrets(rendered))
    assert "MNIST_ADMIN_TOKEN" not in rendered.one("ConfigMap", "api")["data"]  # never in plain config


def test_a_given_admin_token_is_stored_in_a_secret_the_service_reads() -> None:
    rendered = render(sets={"models.admin.token": "s3cret-token"})
    secret = _secrets(rendered)[ADMIN_SECRET]
    assert base64.b64decode(secret["data"]["admin-token"]).decode() == "s3cret-token"
    assert _admin_env(rendered) == [
        {
            "name": "MNIST_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": ADMIN_SECRET, "key": "admin-token"}},
        }
    ]
    assert "s3cret-token" not in yaml.safe_dump(rendered.one("Deployment"))


def test_an_existing_admin_secret_is_read_and_none_created() -> None:
    rendered = render(sets={"models.admin.existingSecret": "deploy-tool", "models.admin.tokenKey": "token"})
    assert not any(name.endswith("-admin") for name in _secrets(rendered))
    (env,) = _admin_env(rendered)
    assert env["valueFrom"]["secretKeyRef"] == {"name": "deploy-tool", "key": "token"}


def test_a_generated_admin_token_is_random_and_only_the_service_gets_it(lifecycle: Rendered) -> None:
    token = base64.b64decode(_secrets(lifecycle)[ADMIN_SECRET]["data"]["admin-token"]).decode()
    assert len(token) == 40 and token.isalnum()
    again = render(LIFECYCLE)  # helm template cannot look up the live Secret: a new draw each time
    assert _secrets(again)[ADMIN_SECRET]["data"]["admin-token"] != base64.b64encode(token.encode())
    assert len(_admin_env(lifecycle)) == 1
    (retrain,) = _pod(lifecycle.one("CronJob", "retrain"))["containers"]
    assert not [e for e in retrain.get("env", []) if e["name"] == "MNIST_ADMIN_TOKEN"]


def test_an_admin_token_and_an_existing_secret_together_fail_the_render() -> None:
    result = run_helm(
        "template", "x", str(CHART),
        "--set", "models.admin.existingSecret=mine", "--set", "models.admin.token=other",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "models.admin.existingSecret and models.admin.token/generate are both set" in result.stderr
