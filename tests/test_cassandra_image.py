"""The local Cassandra image (scripts/build-cassandra-image.sh), run with podman the way the chart's
StatefulSet runs it with ci/local-cassandra-values.yaml: the init container writes cassandra.commitlogSync
into a copy of /etc/cassandra, the node starts with the chart's environment and user, passes the chart's
readiness probe, answers CQL, `cqlsh` and `nodetool` work inside it, its data lands in /var/lib/cassandra,
and a second node started as root (the image's own default) steps down to uid 999 and joins the first
through CASSANDRA_SEEDS.

The containers sit on an internal podman network (no route off the host, no DNS); the test talks to them only
through `podman exec` and a client container on that network."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_binary
from tests.fixtures.image import ULIMITS, Container, podman
from tests.helm_tools import CHART, render
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCAL_VALUES = CHART / "ci" / "local-cassandra-values.yaml"
BUILD_TIMEOUT_S = 1800  # a fresh machine: debootstrap, the jars with mvn, Java from apt; cached: seconds
START_TIMEOUT_S = 420  # a first start on a loaded 2-core machine; the chart allows 600 s
CASSANDRA_UID = 999
# The node's settings as a test deploys them: a small heap (two nodes on a shared 2-core machine), and the
# test-node shortcuts through the chart's own jvm.extraOpts (JVM_EXTRA_OPTS): no 30 s ring delay.
COMMON_SETS = {
    "cassandra.jvm.maxHeapSize": "512M",
    "cassandra.jvm.heapNewSize": "128M",
    "cassandra.jvm.extraOpts": "-Dcassandra.ring_delay_ms=5000 -Dcassandra.skip_wait_for_gossip_to_settle=0",
}
FIRST_NODE_SETS = {**COMMON_SETS, "cassandra.commitlogSync": "batch"}
SECOND_NODE_SETS = {
    **COMMON_SETS,
    "cassandra.commitlogSync": "periodic",
    "cassandra.commitlogSyncPeriod": "5000ms",
}


@dataclass(frozen=True)
class CassandraImage:
    """The image as this test session built it."""

    tag: str
    build_seconds: float
    size_bytes: int

    def config(self) -> dict[str, Any]:
        return dict(json.loads(podman("image", "inspect", self.tag).stdout)[0]["Config"])


@pytest.fixture(scope="module")
def cassandra_image(output_dir: Path) -> CassandraImage:
    """Build (or refresh from cached layers) the image the local values file names."""
    require_binary("podman", "apt-get install podman runc (scripts/install-system-deps.sh)")
    require_binary("debootstrap", "apt-get install debootstrap (scripts/install-system-deps.sh)")
    require_binary("mvn", "apt-get install maven (scripts/install-system-deps.sh)")
    image = yaml.safe_load(LOCAL_VALUES.read_text())["cassandra"]["image"]
    tag = f"{image['repository']}:{image['tag']}"
    started = time.monotonic()
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-cassandra-image.sh")],
        cwd=ROOT,
        env={**os.environ, "IMAGE": tag, "CASSANDRA_VERSION": image["tag"]},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    seconds = time.monotonic() - started
    (output_dir / "cassandra-image-build.log").write_text(build.stdout + build.stderr)
    if build.returncode != 0:
        pytest.fail(
            f"scripts/build-cassandra-image.sh failed (test-output/cassandra-image-build.log):\n"
            f"{build.stderr[-3000:]}"
        )
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    print(f"\nimage {tag}: {size / 1e6:.0f} MB, built in {seconds:.0f}s")
    return CassandraImage(tag=tag, build_seconds=seconds, size_bytes=size)


# --- a pod of the StatefulSet, as podman containers ---------------------------------------------------


@dataclass(frozen=True)
class Network:
    """An internal podman network: the containers reach each other, nothing reaches beyond the host."""

    name: str
    subnet: ipaddress.IPv4Network

    def address(self, host: int) -> str:
        return str(self.subnet.network_address + host)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    name = f"mnist-cassimg-{uuid.uuid4().hex[:8]}"
    podman("network", "create", "--internal", name)
    try:
        inspected = json.loads(podman("network", "inspect", name).stdout)[0]
        assert inspected["internal"] is True
        yield Network(name=name, subnet=ipaddress.ip_network(inspected["subnets"][0]["subnet"]))
    finally:
        podman("network", "rm", "--force", name, check=False)


@dataclass
class Node:
    """One Cassandra container started like a pod of the chart's StatefulSet."""

    container: Container
    address: str
    data_dir: Path
    config_dir: Path
    statefulset: dict[str, Any]
    start_seconds: float = 0.0

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.statefulset["spec"]["template"]["spec"])

    @property
    def cassandra(self) -> dict[str, Any]:
        (found,) = [c for c in self.spec["containers"] if c["name"] == "cassandra"]
        return dict(found)

    def exec(
        self, *command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container.name, *command, timeout=timeout, check=check)

    def cql(self, statement: str) -> str:
        result = self.exec("cqlsh", "--request-timeout=60", "-e", statement, check=False)
        assert result.returncode == 0, f"cqlsh -e {statement!r}: {result.stderr}"
        return result.stdout

    def wait_ready(self, started: float) -> None:
        """Until the chart's readiness probe (cqlsh against the node) passes, as the kubelet would poll it."""
        probe = self.cassandra["readinessProbe"]["exec"]["command"]

        def ready() -> bool:
            if not self.container.running():
                raise AssertionError(f"{self.container.name} exited:\n{self.container.logs()[-4000:]}")
            return self.exec(*probe, check=False, timeout=60).returncode == 0

        try:
            wait_until(ready, START_TIMEOUT_S, "the chart's readiness probe to pass", interval=2)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.container.logs()[-4000:]}") from None
        self.start_seconds = time.monotonic() - started


def environment(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: str(var["value"]) for var in container.get("env", [])}


def memory_limit(container: dict[str, Any]) -> str:
    """The container's memory limit in podman's notation (2Gi -> 2g, 512Mi -> 512m)."""
    limit = str(container["resources"]["limits"]["memory"])
    return limit.removesuffix("i").lower()


def run_init_container(image: str, init: dict[str, Any], config_dir: Path, user: str) -> str:
    """The StatefulSet's init container: its command, environment and user, /config on the pod's volume."""
    args = ["run", "--rm", "--network", "none", *ULIMITS, "--user", user, "--read-only", "--cap-drop", "ALL"]
    args += ["-v", f"{config_dir}:/config"]
    for key, value in environment(init).items():
        args += ["--env", f"{key}={value}"]
    result = podman(*args, "--entrypoint", json.dumps(init["command"]), image, *init["args"], check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def start_node(
    image: CassandraImage, network: Network, host: int, seed: str, sets: dict[str, str], workdir: Path,
    *, as_root: bool,
) -> Node:  # fmt: skip
    """Render the chart with `sets`, run its init container, then start the cassandra container on `network`.

    `as_root=False` runs it as the pod securityContext says (999, no capabilities); `as_root=True` as a plain
    `podman run` of the image would (root, which the entrypoint drops)."""
    statefulset = render(LOCAL_VALUES, sets=sets).one("StatefulSet", "cassandra")
    spec = statefulset["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (cassandra,) = [c for c in spec["containers"] if c["name"] == "cassandra"]
    assert cassandra["image"] == image.tag and cassandra["imagePullPolicy"] == "Never"
    context = {**spec["securityContext"], **cassandra["securityContext"]}
    user = f"{context['runAsUser']}:{context['runAsGroup']}"

    data_dir, config_dir = workdir / "data", workdir / "config"
    for folder in (data_dir, config_dir):
        folder.mkdir()
        # What the pod's fsGroup does for its volumes; the root-started node gets a root-owned data volume.
        owner = 0 if as_root and folder == data_dir else spec["securityContext"]["fsGroup"]
        os.chown(folder, owner, owner)
    run_init_container(image.tag, init, config_dir, user)

    address = network.address(host)
    env = environment(cassandra)
    # The chart's seeds are the StatefulSet's DNS names; an internal podman network has no DNS.
    env["CASSANDRA_SEEDS"] = seed or address
    name = f"mnist-cassimg-{uuid.uuid4().hex[:8]}"
    args = ["run", "--detach", "--name", name, "--hostname", name, *ULIMITS]
    args += ["--network", network.name, "--ip", address, "--memory", memory_limit(cassandra)]
    args += ["-v", f"{data_dir}:/var/lib/cassandra", "-v", f"{config_dir}:/etc/cassandra"]
    if not as_root:
        args += ["--user", user, "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    started = time.monotonic()
    podman(*args, image.tag)
    node = Node(Container(name=name), address, data_dir, config_dir, statefulset)
    node.wait_ready(started)
    return node


def stop(node: Node, output_dir: Path) -> None:
    (output_dir / f"cassandra-image-{node.address}.log").write_text(node.container.logs())
    node.container.remove()


@pytest.fixture(scope="module")
def first_node(
    cassandra_image: CassandraImage,
    network: Network,
    tmp_path_factory: pytest.TempPathFactory,
    output_dir: Path,
) -> Iterator[Node]:
    node = start_node(
        cassandra_image, network, 10, "", FIRST_NODE_SETS, tmp_path_factory.mktemp("cass1"), as_root=False
    )
    print(f"\nfirst node ready (chart's readiness probe) {node.start_seconds:.0f}s after podman run")
    try:
        yield node
    finally:
        stop(node, output_dir)


@pytest.fixture(scope="module")
def second_node(
    cassandra_image: CassandraImage,
    network: Network,
    first_node: Node,
    tmp_path_factory: pytest.TempPathFactory,
    output_dir: Path,
) -> Iterator[Node]:
    node = start_node(
        cassandra_image, network, 11, first_node.address, SECOND_NODE_SETS, tmp_path_factory.mktemp("cass2"),
        as_root=True,
    )  # fmt: skip
    print(f"\nsecond node joined and ready {node.start_seconds:.0f}s after podman run")
    try:
        yield node
    finally:
        stop(node, output_dir)


def rows(cqlsh_output: str) -> list[list[str]]:
    """The data rows of a cqlsh table (the header line and the ----+---- line dropped)."""
    lines = [line for line in cqlsh_output.splitlines() if "|" in line]
    return [[cell.strip() for cell in line.split("|")] for line in lines[1:]]


def settings(node: Node, *names: str) -> dict[str, str]:
    """Cassandra's effective configuration (system_views.settings) as the running node reports it."""
    wanted = ", ".join(f"'{name}'" for name in names)
    out = node.cql(f"SELECT name, value FROM system_views.settings WHERE name IN ({wanted})")
    return {name: value for name, value in rows(out)}


def java_processes(node: Node) -> list[tuple[int, str]]:
    out = node.exec("ps", "-C", "java", "-o", "uid=,args=").stdout
    return [
        (int(line.split(None, 1)[0]), line.split(None, 1)[1]) for line in out.splitlines() if line.strip()
    ]


# --- the image's metadata -----------------------------------------------------------------------------


def test_image_has_the_official_entrypoint_command_ports_volume_and_config_dir(
    cassandra_image: CassandraImage,
) -> None:
    config = cassandra_image.config()
    assert config["Entrypoint"] == ["docker-entrypoint.sh"]
    assert config["Cmd"] == ["cassandra", "-f"]
    assert set(config["ExposedPorts"]) == {"7000/tcp", "7001/tcp", "7199/tcp", "9042/tcp"}
    assert "/var/lib/cassandra" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["CASSANDRA_CONF"] == "/etc/cassandra"
    print(f"\nimage {cassandra_image.tag}: {cassandra_image.size_bytes / 1e6:.0f} MB")


def test_image_has_the_cassandra_user_999_and_its_tools_on_the_path(
    cassandra_image: CassandraImage,
) -> None:
    script = "id cassandra; command -v cassandra cqlsh nodetool; cassandra -v; java -version 2>&1 | head -1"
    args = ["run", "--rm", "--network", "none", *ULIMITS, "--entrypoint", "bash", cassandra_image.tag]
    out = podman(*args, "-c", script).stdout.splitlines()
    assert out[0].startswith("uid=999(cassandra) gid=999(cassandra)")
    assert out[1:4] == [
        "/opt/cassandra/bin/cassandra",
        "/opt/cassandra/bin/cqlsh",
        "/opt/cassandra/bin/nodetool",
    ]
    assert out[4] == yaml.safe_load(LOCAL_VALUES.read_text())["cassandra"]["image"]["tag"]
    assert '"17.' in out[5]


def test_entrypoint_runs_cassandra_for_options_and_any_other_command_as_is(
    cassandra_image: CassandraImage,
) -> None:
    run = ["run", "--rm", "--network", "none", *ULIMITS, "--user", "999:999", cassandra_image.tag]
    # A first argument starting with "-" is an option of `cassandra -f` (here -v: print the version).
    assert podman(*run, "-v").stdout.strip() == cassandra_image.tag.rsplit(":", 1)[1]
    assert podman(*run, "echo", "as is").stdout == "as is\n"


def test_entrypoint_writes_every_address_variable_and_can_run_again(
    cassandra_image: CassandraImage, tmp_path: Path
) -> None:
    """The variables the chart does not set, as a user of the official image may: explicit addresses, seeds,
    tokens; a restart (the same config volume, the entrypoint again) leaves one line per key."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    os.chown(config_dir, CASSANDRA_UID, CASSANDRA_UID)
    podman(
        "run", "--rm", "--network", "none", *ULIMITS, "--user", "999:999", "-v", f"{config_dir}:/config",
        "--entrypoint", "cp", cassandra_image.tag, "-R", "/etc/cassandra/.", "/config/",
    )  # fmt: skip
    env = {
        "CASSANDRA_LISTEN_ADDRESS": "127.0.0.7",
        "CASSANDRA_BROADCAST_ADDRESS": "192.0.2.70",
        "CASSANDRA_RPC_ADDRESS": "127.0.0.8",
        "CASSANDRA_BROADCAST_RPC_ADDRESS": "192.0.2.80",
        "CASSANDRA_SEEDS": "192.0.2.70,192.0.2.71",
        "CASSANDRA_NUM_TOKENS": "4",
        "CASSANDRA_CLUSTER_NAME": "named here",
    }
    args = ["run", "--rm", "--network", "none", *ULIMITS, "--user", "999:999"]
    args += ["-v", f"{config_dir}:/etc/cassandra", *(f"--env={k}={v}" for k, v in env.items())]
    for _ in range(2):
        # `cassandra -h` only prints its usage: the entrypoint's edits happen, no JVM starts.
        podman(*args, cassandra_image.tag, "cassandra", "-h")
    text = (config_dir / "cassandra.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["listen_address"] == "127.0.0.7"
    assert config["broadcast_address"] == "192.0.2.70"
    assert config["rpc_address"] == "127.0.0.8"
    assert config["broadcast_rpc_address"] == "192.0.2.80"
    assert config["seed_provider"][0]["parameters"][0]["seeds"] == "192.0.2.70,192.0.2.71"
    assert config["num_tokens"] == 4
    assert config["cluster_name"] == "named here"
    for key in ("listen_address", "broadcast_address", "rpc_address", "broadcast_rpc_address", "num_tokens"):
        assert sum(line.startswith(f"{key}:") for line in text.splitlines()) == 1, key


# --- one node, as the chart runs it ----------------------------------------------------------------------


def test_node_answers_cql_with_the_charts_cluster_name_datacenter_and_rack(first_node: Node) -> None:
    out = first_node.cql("SELECT cluster_name, data_center, rack, release_version FROM system.local")
    (row,) = rows(out)
    values = yaml.safe_load((CHART / "values.yaml").read_text())["cassandra"]
    assert row == [values["clusterName"], values["datacenter"], values["rack"], values["image"]["tag"]]


def test_node_answers_cql_from_another_container_on_its_address(
    cassandra_image: CassandraImage, network: Network, first_node: Node
) -> None:
    """What a service pod does: connect to the node's own address (rpc_address 0.0.0.0, broadcast to it)."""
    out = podman(
        "run", "--rm", "--network", network.name, *ULIMITS, "--entrypoint", "cqlsh", cassandra_image.tag,
        first_node.address, "-e", "SELECT broadcast_address, rpc_address FROM system.local",
    ).stdout  # fmt: skip
    assert out.count(first_node.address) == 2, out


def test_nodetool_status_shows_the_node_up_and_normal(first_node: Node) -> None:
    out = first_node.exec("nodetool", "status").stdout
    assert f"UN  {first_node.address}" in out, out
    assert "Datacenter: dc1" in out


def test_entrypoint_wrote_the_charts_environment_into_the_config(first_node: Node) -> None:
    config = yaml.safe_load((first_node.config_dir / "cassandra.yaml").read_text())
    env = environment(first_node.cassandra)
    assert config["cluster_name"] == env["CASSANDRA_CLUSTER_NAME"]
    assert config["endpoint_snitch"] == env["CASSANDRA_ENDPOINT_SNITCH"] == "GossipingPropertyFileSnitch"
    assert config["listen_address"] == config["broadcast_address"] == first_node.address
    assert config["rpc_address"] == "0.0.0.0"
    assert config["broadcast_rpc_address"] == first_node.address
    assert config["seed_provider"][0]["parameters"][0]["seeds"] == first_node.address
    rackdc = (first_node.config_dir / "cassandra-rackdc.properties").read_text().splitlines()
    assert f"dc={env['CASSANDRA_DC']}" in rackdc and f"rack={env['CASSANDRA_RACK']}" in rackdc


def test_commitlog_sync_of_the_chart_is_what_the_running_node_uses(first_node: Node) -> None:
    assert FIRST_NODE_SETS["cassandra.commitlogSync"] == "batch"
    effective = settings(first_node, "commitlog_sync", "commitlog_sync_period")
    assert effective["commitlog_sync"] == "batch"
    assert effective.get("commitlog_sync_period", "0ms") in {"0ms", "null", "0"}


def test_node_runs_as_uid_999_with_the_charts_heap(first_node: Node) -> None:
    ((uid, args),) = java_processes(first_node)
    assert uid == CASSANDRA_UID
    heap = FIRST_NODE_SETS["cassandra.jvm.maxHeapSize"]
    assert f"-Xmx{heap}" in args.split() and f"-Xms{heap}" in args.split()
    assert "-Dcassandra.ring_delay_ms=5000" in args.split()  # JVM_EXTRA_OPTS reached the JVM


def test_data_and_commit_log_land_in_var_lib_cassandra_owned_by_999(first_node: Node) -> None:
    first_node.cql(
        "CREATE KEYSPACE IF NOT EXISTS image_test WITH replication = {'class': 'SimpleStrategy', "
        "'replication_factor': 1}; CREATE TABLE IF NOT EXISTS image_test.t (id int PRIMARY KEY, v text); "
        "INSERT INTO image_test.t (id, v) VALUES (1, 'on disk');"
    )
    first_node.exec("nodetool", "flush", "image_test")
    sstables = list((first_node.data_dir / "data" / "image_test").glob("t-*/*-Data.db"))
    assert sstables, sorted(p.name for p in first_node.data_dir.rglob("*"))[:50]
    segments = list((first_node.data_dir / "commitlog").glob("CommitLog-*.log"))
    assert segments
    for path in sstables + segments:
        assert path.stat().st_uid == CASSANDRA_UID, path


# --- a second node: the image's root default, and CASSANDRA_SEEDS ----------------------------------------


def test_second_node_joins_through_the_seed_and_both_are_up_and_normal(
    first_node: Node, second_node: Node
) -> None:
    def both_up_and_normal(node: Node) -> bool:
        out = node.exec("nodetool", "status").stdout
        return all(f"UN  {address}" in out for address in (first_node.address, second_node.address))

    for node in (first_node, second_node):
        # Gossip may take a moment to tell the seed that the joined node is normal.
        wait_until(partial(both_up_and_normal, node), 60, f"nodetool status on {node.address}", interval=2)


def test_a_write_on_one_node_reads_back_from_the_other_at_consistency_all(
    first_node: Node, second_node: Node
) -> None:
    first_node.cql(
        "CREATE KEYSPACE IF NOT EXISTS ring_test WITH replication = {'class': 'NetworkTopologyStrategy', "
        "'dc1': 2}; CREATE TABLE IF NOT EXISTS ring_test.t (id int PRIMARY KEY, v text)"
    )
    # A write at ALL needs both nodes to know the table.
    wait_until(
        lambda: second_node.exec("cqlsh", "-e", "DESCRIBE TABLE ring_test.t", check=False).returncode == 0,
        60,
        "the table's schema on the second node",
        interval=1,
    )
    first_node.cql("CONSISTENCY ALL; INSERT INTO ring_test.t (id, v) VALUES (7, 'replicated');")
    out = second_node.cql("CONSISTENCY ALL; SELECT v FROM ring_test.t WHERE id = 7")
    assert "replicated" in out, out


def test_root_started_node_runs_cassandra_as_999_and_owns_its_volume(second_node: Node) -> None:
    ((uid, _),) = java_processes(second_node)
    assert uid == CASSANDRA_UID
    assert (second_node.data_dir / "data").stat().st_uid == CASSANDRA_UID


def test_second_node_uses_its_own_periodic_commitlog_setting(second_node: Node) -> None:
    effective = settings(second_node, "commitlog_sync", "commitlog_sync_period")
    assert effective == {"commitlog_sync": "periodic", "commitlog_sync_period": "5000ms"}


def test_prestop_drain_then_sigterm_stops_the_node_cleanly(second_node: Node) -> None:
    (command,) = [second_node.cassandra["lifecycle"]["preStop"]["exec"]["command"]]
    second_node.exec(*command, timeout=180)
    podman("stop", "--time", "60", second_node.container.name, timeout=120)
    assert "DRAINED" in second_node.container.logs()
    assert not second_node.container.running()
