"""An operator's view: Cassandra's own command-line client, cqlsh, reads what the service recorded."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import missing
from tests.fixtures.cassandra import CassandraNode
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def cqlsh(node: CassandraNode, credentials: Path, statement: str) -> str:
    binary = Path(sys.executable).with_name("cqlsh")
    if not binary.exists():
        missing("cqlsh", "pip install cqlsh (it is in the [test] extra: make install)")
    proc = subprocess.run(
        [str(binary), "--credentials", str(credentials), "-u", str(node.username), node.host, str(node.port),
         "-e", statement],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cqlsh_reads_a_prediction_the_service_wrote(
    cassandra_node: CassandraNode, cassandra_keyspace: str, server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(env={"MNIST_STORE_URL": cassandra_node.store_url(cassandra_keyspace)}, workers=1)
    pixels = [[1.0 if 6 <= r <= 21 and 13 <= c <= 15 else 0.0 for c in range(28)] for r in range(28)]  # a "1"
    answer = requests.post(f"{server.url}/predict", json={"pixels": pixels}, timeout=30).json()
    record_id = uuid.UUID(answer["id"])
    columns = "id, model, version, digit, confidence"
    statement = f"SELECT {columns} FROM {cassandra_keyspace}.predictions WHERE id = {record_id}"
    # The write queue sends it to Cassandra just after the response.
    wait_until(lambda: cassandra_node.session().execute(statement).one(), 30, "the record to reach Cassandra")

    credentials = tmp_path / "credentials"
    user, password = cassandra_node.username, cassandra_node.password
    credentials.write_text(f"[PlainTextAuthProvider]\nusername = {user}\npassword = {password}\n")
    credentials.chmod(0o600)  # cqlsh refuses a credentials file others can read
    output = cqlsh(cassandra_node, credentials, statement)

    assert "(1 rows)" in output
    row = next(line for line in output.splitlines() if str(record_id) in line)
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[:4] == [str(record_id), answer["model"], answer["version"], str(answer["digit"])]
    assert float(cells[4]) == pytest.approx(answer["confidence"], abs=1e-5)
