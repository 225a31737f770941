"""Mutual TLS to a real Cassandra node that requires client certificates (CASSANDRA_CLIENT_AUTH=required).

The node takes only TLS connections from clients whose certificate its CA signed (scripts/cassandra.sh makes
the CA, the node's and a client's certificate). The right certificate connects; none, or one from another CA,
is refused with a message that says so; unusable files are named before any connection; and no password,
key passphrase or key material reaches a log line of a run that used them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from service.store.base import PredictionRecord
from service.store.factory import spooled_cassandra
from tests.conftest import free_port, missing, require_binary
from tests.fixtures.cassandra import TEST_STATES, CassandraNode, run_script, unique_keyspace
from tests.service_support import digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MNIST = str(Path(sys.executable).with_name("mnist"))


@pytest.fixture(scope="module")
def mtls_node() -> Iterator[CassandraNode]:
    """A node of this module's own, on free ports, that requires a client certificate."""
    for tool, package in (("java", "openjdk-17-jre-headless"), ("mvn", "maven"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            missing(f"{tool} (to run a TLS Cassandra node)", f"apt-get install {package}")
    node = CassandraNode(
        port=free_port(),
        storage_port=free_port(),
        started_here=True,
        state=TEST_STATES / f"cassandra-test-mtls-{os.getpid()}",
        client_auth=True,
    )
    shutil.rmtree(node.state, ignore_errors=True)  # type: ignore[arg-type]
    seconds = node.start()
    print(f"\nCassandra requiring client certificates started on port {node.port} in {seconds:.1f}s")
    yield node
    node.close()
    run_script("kill", state=node.state, env=node.script_env(), timeout=180)
    shutil.rmtree(node.state, ignore_errors=True)  # type: ignore[arg-type]


def openssl(*args: str) -> None:
    require_binary("openssl", "apt-get install openssl (scripts/install-system-deps.sh)")
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A client certificate and key signed by a CA the node has never seen."""
    folder = tmp_path_factory.mktemp("foreign-ca")
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem")
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl(
        "req",
        "-x509",
        *ec,
        "-days",
        "2",
        "-subj",
        "/CN=someone-else-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    openssl("req", *ec, "-subj", "/CN=mnist-service", "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-out", str(cert))  # fmt: skip
    return cert, key


def tls_files(node: CassandraNode) -> dict[str, Path]:
    folder = node.tls_ca.parent
    return {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}


def plain_url(
    node: CassandraNode, keyspace: str, user: str = "cassandra", password: str = "cassandra"
) -> str:
    return f"cassandra://{user}:{password}@{node.host}:{node.port}/{keyspace}"


def mnist(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str]:
    proc = subprocess.run(
        [MNIST, *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_the_right_client_certificate_connects(mtls_node: CassandraNode, tmp_path: Path) -> None:
    keyspace = unique_keyspace("mtls")
    files = tls_files(mtls_node)
    # Settings beside the CA (what the chart sets from its Secret), the URL naming none of the files.
    env = {
        "MNIST_CASSANDRA_TLS_CA": str(files["ca"]),
        "MNIST_CASSANDRA_TLS_CERT": str(files["cert"]),
        "MNIST_CASSANDRA_TLS_KEY": str(files["key"]),
    }
    code, output = mnist("db", "init", "--url", plain_url(mtls_node, keyspace), "--timeout", "120", env=env)
    assert code == 0, output
    code, output = mnist("db", "status", "--url", plain_url(mtls_node, keyspace), env=env)
    assert code == 0, output
    assert "connectivity: ok (Cassandra 5.0" in output
    # And the URL parameters alone, through the store the service uses.
    store = spooled_cassandra(mtls_node.config(keyspace, tmp_path / "spool"))
    try:
        assert store.inner.config.tls_cert == files["cert"]
        rec = PredictionRecord(
            id=uuid.uuid4(), created=datetime(2026, 6, 3, 12, tzinfo=UTC), model="cnn", version="1", digit=3,
            confidence=0.9, probabilities=tuple([0.9] + [0.1 / 9] * 9), pixels=bytes(784), latency_ms=1.0,
        )  # fmt: skip
        store.record(rec)
        assert store.spool.depth == 0, store.inner.last_error
        assert store.get(rec.id) == rec
    finally:
        store.close()


def test_without_a_client_certificate_the_node_refuses_with_a_clear_error(mtls_node: CassandraNode) -> None:
    url = plain_url(mtls_node, "mtls_none") + f"?tls_ca={tls_files(mtls_node)['ca']}"
    code, output = mnist("db", "init", "--url", url, "--timeout", "120")
    assert code == 1, output
    assert "refused this client's TLS connection" in output
    assert "set MNIST_CASSANDRA_TLS_CERT and MNIST_CASSANDRA_TLS_KEY" in output
    # A refusal is not an outage: no waiting out the 120 s for it to change.
    assert "waiting for Cassandra" not in output and "Traceback" not in output


def test_a_client_certificate_from_a_foreign_ca_is_refused_with_a_clear_error(
    mtls_node: CassandraNode, foreign: tuple[Path, Path]
) -> None:
    cert, key = foreign
    url = (
        plain_url(mtls_node, "mtls_foreign")
        + f"?tls_ca={tls_files(mtls_node)['ca']}&tls_cert={cert}&tls_key={key}"
    )
    code, output = mnist("db", "init", "--url", url, "--timeout", "120")
    assert code == 1, output
    assert "refused this client's TLS connection" in output
    assert f"client certificate {cert}" in output and "signed by a CA the nodes trust" in output
    assert "waiting for Cassandra" not in output and "Traceback" not in output


def test_a_node_certificate_from_a_ca_this_client_does_not_trust_is_named(
    mtls_node: CassandraNode, foreign: tuple[Path, Path]
) -> None:
    files = tls_files(mtls_node)
    other_ca = foreign[0].parent / "ca.pem"
    url = (
        plain_url(mtls_node, "mtls_ca")
        + f"?tls_ca={other_ca}&tls_cert={files['cert']}&tls_key={files['key']}"
    )
    code, output = mnist("db", "init", "--url", url, "--timeout", "120")
    assert code == 1, output
    assert "this client does not trust the TLS certificate of Cassandra" in output
    assert f"the CA bundle {other_ca}" in output and "CERTIFICATE_VERIFY_FAILED" in output
    assert "waiting for Cassandra" not in output


def test_unusable_tls_files_are_named_before_any_connection(
    tmp_path: Path, foreign: tuple[Path, Path], mtls_node: CassandraNode
) -> None:
    cert, _ = foreign
    mismatched_key = tls_files(mtls_node)["key"]  # the dev CA's client key, not this certificate's
    url = f"cassandra://127.0.0.1:{free_port()}/ks?tls_cert={cert}&tls_key={mismatched_key}"
    code, output = mnist("db", "init", "--url", url, "--timeout", "60")
    assert code == 1, output
    assert f"the client certificate {cert} with key {mismatched_key}" in output
    assert "KEY_VALUES_MISMATCH" in output and "waiting for Cassandra" not in output
    code, output = mnist("db", "init", "--url", f"cassandra://127.0.0.1/ks?tls_cert={cert}")
    assert code == 1 and "a TLS client certificate without its key" in output, output
    absent = tmp_path / "absent.pem"
    code, output = mnist("db", "init", "--url", f"cassandra://127.0.0.1/ks?tls_ca={absent}")
    assert code == 1 and f"the CA bundle {absent}" in output and "No such file" in output, output


def test_no_password_passphrase_or_key_material_reaches_a_log_line(
    mtls_node: CassandraNode, server_factory: object, tmp_path: Path, mnist_data_dir: Path
) -> None:
    files = tls_files(mtls_node)
    password = f"pw-{uuid.uuid4().hex}"
    passphrase = f"pp-{uuid.uuid4().hex}"
    user = f"leakcheck_{uuid.uuid4().hex[:8]}"
    mtls_node.session().execute(
        f"CREATE ROLE {user} WITH PASSWORD = '{password}' AND LOGIN = true AND SUPERUSER = true"
    )
    encrypted_key = tmp_path / "client-encrypted.key"
    openssl(
        "pkey",
        "-in",
        str(files["key"]),
        "-aes256",
        "-passout",
        f"pass:{passphrase}",
        "-out",
        str(encrypted_key),
    )
    keyspace = unique_keyspace("leak")
    env = {
        "MNIST_STORE_URL": plain_url(mtls_node, keyspace, user, password) + f"?tls_ca={files['ca']}",
        "MNIST_CASSANDRA_TLS_CERT": str(files["cert"]),
        "MNIST_CASSANDRA_TLS_KEY": str(encrypted_key),
        "MNIST_CASSANDRA_TLS_KEY_PASSWORD": passphrase,
        "MNIST_LOG_LEVEL": "DEBUG",  # the most a log can say
    }
    outputs: dict[str, str] = {}
    code, outputs["db init"] = mnist("db", "init", "--timeout", "120", env=env)
    assert code == 0, outputs["db init"]
    code, outputs["db status"] = mnist("db", "status", env=env)
    assert code == 0, outputs["db status"]
    # Runs that fail: a wrong passphrase, a wrong password; their messages must not quote what was given.
    wrong = {**env, "MNIST_CASSANDRA_TLS_KEY_PASSWORD": f"{passphrase}-wrong"}
    code, outputs["wrong passphrase"] = mnist("db", "init", "--timeout", "30", env=wrong)
    assert code == 1 and "cannot be used" in outputs["wrong passphrase"], outputs["wrong passphrase"]
    wrong = {**env, "MNIST_STORE_URL": env["MNIST_STORE_URL"].replace(password, f"{password}-wrong")}
    code, outputs["wrong password"] = mnist("db", "init", "--timeout", "30", env=wrong)
    assert code == 1 and "refused the credentials" in outputs["wrong password"], outputs["wrong password"]

    server = server_factory(env)  # type: ignore[operator]
    for digit in digits(mnist_data_dir, 5):
        answer = requests.post(f"{server.url}/predict", files={"image": ("d.png", digit.png)}, timeout=30)
        assert answer.status_code == 200, answer.text
    assert requests.get(f"{server.url}/api/predictions", timeout=30).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200
    server.stop()
    outputs["server"] = server.logs()
    assert "connected to Cassandra" in outputs["server"], outputs["server"][-3000:]

    key_lines = [
        line
        for path in (files["key"], encrypted_key)
        for line in path.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    secrets = {
        "password": password,
        "passphrase": passphrase,
        **{f"key line {i}": k for i, k in enumerate(key_lines)},
    }
    for source, text in outputs.items():
        assert text.strip(), f"{source}: no output at all, so nothing was checked"
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in the output of {source}"
        assert "PRIVATE KEY" not in text, f"key material in the output of {source}"
