"""The chart's keyspace-init Job against a real Cassandra: its container command and environment exactly as
helm renders them (ConfigMap and Secret resolved), run in the real image with the pod's security context; then
the service container from the same render records a prediction there."""

from __future__ import annotations

import io
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from tests.conftest import ROOT, free_port
from tests.fixtures.cassandra import CassandraNode
from tests.fixtures.image import Container, ServiceImage, podman, resolve_env, run_args
from tests.helm_tools import Rendered, render
from tests.readback import read_back
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_TIMEOUT_S = 300


@pytest.fixture
def keyspace(cassandra_node: CassandraNode) -> Iterator[str]:
    name = f"helm_{uuid.uuid4().hex[:10]}"
    yield name
    cassandra_node.drop_keyspace(name)


def render_for(node: CassandraNode, keyspace: str) -> Rendered:
    """The chart as a user with an external one-node Cassandra (this node, its credentials) installs it."""
    datacenter = node.session().execute("SELECT data_center FROM system.local").one().data_center
    return render(
        # One node holds one replica; the chart's default for an external cluster (3) needs three.
        set_json={"store.replication": {datacenter: 1}},
        sets={
            "cassandra.enabled": "false",
            "externalCassandra.hosts[0]": node.host,
            "externalCassandra.port": str(node.port),
            "externalCassandra.datacenter": datacenter,
            "store.keyspace": keyspace,
            "auth.username": node.username or "",
            "auth.password": node.password or "",
            "keyspaceInit.waitSeconds": "120",
        },
    )


def run_job(image: ServiceImage, rendered: Rendered) -> subprocess.CompletedProcess[str]:
    """The Job's pod, in the foreground, as the kubelet would run it (user, read-only root, emptyDirs)."""
    job = rendered.one("Job", "keyspace-init")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image.tag, "the Job must run the service image"
    env = resolve_env(container, rendered.objects)
    args = run_args(pod, container, env)
    return podman(
        "run", "--rm", *args, image.tag, *container.get("args", []), timeout=JOB_TIMEOUT_S, check=False
    )


def keyspace_replication(node: CassandraNode, keyspace: str) -> dict[str, str] | None:
    row = (
        node.session()
        .execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [keyspace])
        .one()
    )
    return dict(row.replication) if row else None


def tables(node: CassandraNode, keyspace: str) -> set[str]:
    rows = node.session().execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [keyspace]
    )
    return {row.table_name for row in rows}


def test_keyspace_init_job_creates_the_keyspace_with_the_charts_replication(
    service_image: ServiceImage, cassandra_node: CassandraNode, keyspace: str
) -> None:
    rendered = render_for(cassandra_node, keyspace)
    assert keyspace_replication(cassandra_node, keyspace) is None

    result = run_job(service_image, rendered)
    assert result.returncode == 0, result.stdout + result.stderr

    replication = keyspace_replication(cassandra_node, keyspace)
    assert replication is not None
    datacenter = rendered.one("ConfigMap", "api")["data"]["MNIST_STORE_URL"].split("dc=")[1].split("&")[0]
    assert replication["class"].endswith("NetworkTopologyStrategy")
    assert replication[datacenter] == "1"
    schema = (ROOT / "service" / "store" / "cassandra" / "schema.cql").read_text()
    expected = {
        line.split(".")[1].split()[0] for line in schema.splitlines() if line.startswith("CREATE TABLE")
    }
    assert expected and expected <= tables(cassandra_node, keyspace)


def test_keyspace_init_job_is_idempotent_like_a_post_upgrade_hook(
    service_image: ServiceImage, cassandra_node: CassandraNode, keyspace: str
) -> None:
    rendered = render_for(cassandra_node, keyspace)
    first = run_job(service_image, rendered)
    assert first.returncode == 0, first.stdout + first.stderr
    before = tables(cassandra_node, keyspace)
    again = run_job(service_image, rendered)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tables(cassandra_node, keyspace) == before


def test_keyspace_init_job_fails_clearly_when_cassandra_never_answers(service_image: ServiceImage) -> None:
    rendered = render(
        sets={
            "cassandra.enabled": "false",
            "externalCassandra.hosts[0]": "127.0.0.1",
            "externalCassandra.port": str(free_port()),
            "keyspaceInit.waitSeconds": "3",
        }
    )
    result = run_job(service_image, rendered)
    assert result.returncode != 0
    assert "Error" in result.stderr or "error" in result.stderr.lower(), result.stderr


def digit_png() -> bytes:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_service_container_from_the_same_render_records_into_that_keyspace(
    service_image: ServiceImage,
    cassandra_node: CassandraNode,
    keyspace: str,
    start_container: Callable[..., Container],
) -> None:
    rendered = render_for(cassandra_node, keyspace)
    assert run_job(service_image, rendered).returncode == 0

    deployment = rendered.one("Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = free_port()
    # The one change: host networking here, so the port must be a free one rather than the pod's own 8000.
    env = resolve_env(container, rendered.objects) | {"MNIST_PORT": str(port), "MNIST_WORKERS": "1"}
    server = start_container(
        service_image.tag, run_args(pod, container, env), container.get("args"), port=port
    )
    server.wait_ready(timeout=120)

    made = requests.post(
        f"{server.url}/predict", data=digit_png(), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert made.status_code == 200, made.text
    record_id = made.json()["id"]
    read_back(server.url, made.json(), timeout_s=20)
    # The API also answers from the write-behind queue; the row itself must land in the Job's keyspace.
    query = f"SELECT digit FROM {keyspace}.predictions WHERE id = %s"
    row = wait_until(
        lambda: cassandra_node.session().execute(query, [uuid.UUID(record_id)]).one(),
        20,
        f"prediction {record_id} to reach {keyspace}.predictions",
        interval=0.3,
    )
    assert row.digit == made.json()["digit"]
    readiness = requests.get(f"{server.url}/readyz", timeout=10).json()
    assert readiness["store"]["cassandra"] == "up"
