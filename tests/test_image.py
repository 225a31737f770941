"""The container image, built with podman from the real Dockerfile and run on a read-only root filesystem:
predicts over HTTP, counts in /metrics, passes its HEALTHCHECK and the chart's `helm test` command, and exits
cleanly on SIGTERM within gunicorn's grace period."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from service.data import load_mnist
from tests.conftest import ROOT, free_port
from tests.fixtures.image import ULIMITS, Container, ServiceImage, podman, resolve_env, run_args
from tests.helm_tools import render
from tests.readback import read_back

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACEFUL_TIMEOUT_S = 10
# The writable places the image documents; everything else is read-only, as in the chart's pods.
SCRATCH = ("/tmp", "/var/lib/mnist", "/var/spool/mnist", "/run/prometheus")
# What podman itself puts into every container (name resolution, its marker file).
PODMAN_MANAGED = {"/etc", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run", "/run/.containerenv"}


def standalone_args(port: int) -> list[str]:
    """`podman run` options for the image on its own: SQLite store, scratch tmpfs, non-root, read-only."""
    args = ["--network", "host", *ULIMITS]
    args += [
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    for path in SCRATCH:
        args += ["--tmpfs", f"{path}:rw,U"]
    env = {"MNIST_PORT": str(port), "MNIST_WORKERS": "2", "MNIST_GRACEFUL_TIMEOUT_S": str(GRACEFUL_TIMEOUT_S)}
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def digits(mnist_data_dir: Path) -> list[tuple[bytes, int]]:
    """Twenty MNIST test digits as PNG files, with their labels."""
    mnist = load_mnist(mnist_data_dir)
    found = []
    for index in range(0, 2000, 100):
        buffer = io.BytesIO()
        Image.fromarray(mnist.test_images[index]).save(buffer, format="PNG")
        found.append((buffer.getvalue(), int(mnist.test_labels[index])))
    return found


@pytest.fixture(scope="module")
def served(service_image: ServiceImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image serving on a free port (one container for the module's read-only checks)."""
    port = free_port()
    name = f"mnist-image-{port}"
    podman("run", "--detach", "--name", name, *standalone_args(port), service_image.tag)
    container = Container(name=name, url=f"http://127.0.0.1:{port}")
    try:
        container.wait_ready()
        yield container
    finally:
        log = tmp_path_factory.mktemp("image") / "served.log"
        log.write_text(container.logs())
        container.remove()


def test_image_runs_as_a_fixed_non_root_user_with_port_healthcheck_and_entrypoint(
    service_image: ServiceImage,
) -> None:
    inspected = service_image.inspect()
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["mnist"]
    assert config["Cmd"] == ["serve"]
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MNIST_MODEL_DIR"] == "/opt/mnist/models"
    assert env["MNIST_HOST"] == "0.0.0.0"
    print(f"\nimage size {service_image.size_bytes / 1e6:.0f} MB, build {service_image.build_seconds:.0f}s")


def test_runtime_image_has_no_compiler_no_pip_and_no_tensorflow(service_image: ServiceImage) -> None:
    script = (
        "import importlib.util, shutil, json;"
        "print(json.dumps({'gcc': shutil.which('gcc') or shutil.which('cc'), 'pip': shutil.which('pip'),"
        "'tensorflow': importlib.util.find_spec('tensorflow') is not None,"
        "'litert': importlib.util.find_spec('ai_edge_litert') is not None}))"
    )
    result = podman(
        "run",
        "--rm",
        "--network",
        "host",
        *ULIMITS,
        "--entrypoint",
        "python3",
        service_image.tag,
        "-c",
        script,
    )
    found = json.loads(result.stdout)
    assert found == {"gcc": None, "pip": None, "tensorflow": False, "litert": True}


def test_models_are_baked_in_under_the_model_dir(service_image: ServiceImage) -> None:
    result = podman(
        "run", "--rm", "--network", "host", *ULIMITS, "--entrypoint", "sh", service_image.tag, "-c",
        "ls /opt/mnist/models/*/*/model.tflite",
    )  # fmt: skip
    shipped = sorted(str(p.relative_to(ROOT / "models")) for p in (ROOT / "models").glob("*/*/model.tflite"))
    baked = sorted(line.removeprefix("/opt/mnist/models/") for line in result.stdout.split())
    assert baked == shipped and baked


def test_container_predicts_digits_over_http(served: Container, digits: list[tuple[bytes, int]]) -> None:
    correct = 0
    for png, label in digits:
        response = requests.post(
            f"{served.url}/predict", data=png, headers={"Content-Type": "image/png"}, timeout=10
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert 0 <= body["digit"] <= 9
        correct += body["digit"] == label
    assert correct >= len(digits) * 0.85, f"{correct}/{len(digits)} right"


def test_prediction_is_recorded_and_read_back(served: Container, digits: list[tuple[bytes, int]]) -> None:
    png, _ = digits[0]
    made = requests.post(f"{served.url}/predict", data=png, headers={"Content-Type": "image/png"}, timeout=10)
    read_back(served.url, made.json(), timeout_s=10, poll_s=0.2)


def test_metrics_count_the_predictions(served: Container, digits: list[tuple[bytes, int]]) -> None:
    requests.post(
        f"{served.url}/predict", data=digits[1][0], headers={"Content-Type": "image/png"}, timeout=10
    )
    text = requests.get(f"{served.url}/metrics", timeout=10).text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mnist_predictions_total{")
    )
    assert counted >= 1
    assert "mnist_http_requests_total" in text


def test_image_healthcheck_passes_on_a_serving_container(
    service_image: ServiceImage, served: Container
) -> None:
    test = service_image.inspect()["Healthcheck"]["Test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    # Run the HEALTHCHECK command itself inside the container (podman's timer needs systemd, absent here).
    result = podman(
        "exec", "--env", f"MNIST_PORT={served.url.rsplit(':', 1)[1]}", served.name, *test[1:], check=False
    )
    assert result.returncode == 0, result.stderr


def test_helm_test_pod_command_predicts_through_the_image(
    service_image: ServiceImage, served: Container, start_container: Callable[..., Container]
) -> None:
    """The chart's `helm test` pod, as rendered, run against the serving container instead of the Service."""
    rendered = render()
    pod = rendered.one("Pod", "test")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == service_image.tag
    env = resolve_env(container, rendered.objects) | {"MNIST_TEST_URL": served.url}
    tester = start_container(service_image.tag, run_args(pod["spec"], container, env), container["args"])
    status = podman("wait", tester.name, timeout=120).stdout.strip()
    assert status == "0", tester.logs()
    assert json.loads(tester.logs().strip().splitlines()[-1])["digit"] == 1


def test_sigterm_stops_the_container_cleanly_within_the_grace_period(
    service_image: ServiceImage, start_container: Callable[..., Container], digits: list[tuple[bytes, int]]
) -> None:
    port = free_port()
    container = start_container(service_image.tag, standalone_args(port), port=port)
    container.wait_ready()
    for png, _ in digits[:5]:
        requests.post(f"{container.url}/predict", data=png, headers={"Content-Type": "image/png"}, timeout=10)
    started = time.monotonic()
    podman("kill", "--signal", "TERM", container.name)
    status = podman("wait", container.name, timeout=GRACEFUL_TIMEOUT_S + 30).stdout.strip()
    took = time.monotonic() - started
    assert status == "0", container.logs()[-3000:]
    assert took < GRACEFUL_TIMEOUT_S, f"exit took {took:.1f}s"
    print(f"\nSIGTERM -> exit 0 in {took:.1f}s")


def test_nothing_outside_the_scratch_mounts_is_written(served: Container) -> None:
    """The root filesystem is read-only; podman diff lists any change the container made to it anyway."""
    changes: dict[str, list[str]] = json.loads(podman("diff", "--format", "json", served.name).stdout or "{}")
    changed = [path for paths in changes.values() for path in paths or []]
    outside = [p for p in changed if p not in PODMAN_MANAGED and not any(p.startswith(s) for s in SCRATCH)]
    assert not outside, outside
