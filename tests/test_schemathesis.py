"""schemathesis against the live server's /openapi.json: every check, every phase, a fixed seed.

What the spec calls valid must be served (2xx, or 404 for an id it could not know), what it calls invalid must
be refused with a 4xx, no answer may be a 5xx, and every answer must match its documented status, content
type and schema. The stateful phase follows the spec's links from POST /predict and GET /api/predictions to
the record operations, so those see real ids. Settings: tests/schemathesis.toml; image formats:
tests/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.service_support import digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261202
# Per operation, for the fuzzing and stateful phases (the coverage phase walks every constraint once and
# takes most of the run: about 130 s of CPU in all).
MAX_EXAMPLES = 10
RUN_TIMEOUT_S = 900  # about 3 min on two free cores; a machine busy with other work needs more


def test_schemathesis_finds_no_failures_and_no_server_errors(
    server_factory, mnist_data_dir: Path, tmp_path: Path, output_dir: Path
) -> None:
    server = server_factory(workers=2)
    digits_dir = tmp_path / "digits"
    digits_dir.mkdir()
    for digit in digits(mnist_data_dir, 20, start=300):
        (digits_dir / f"{digit.index}.png").write_bytes(digit.png)
    report = output_dir / "schemathesis.txt"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        # One worker: Python 3.11's ast.parse (which Hypothesis calls to describe lambdas) is not thread-safe
        # and fails with "AST constructor recursion depth mismatch" when two workers describe at once.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(ROOT / "tests" / "schemathesis_hooks.py"),
        "MNIST_SCHEMATHESIS_DIGITS": str(digits_dir),
    }
    print("running:", " ".join(command), flush=True)
    with report.open("w") as out:
        # cwd: schemathesis keeps a cache folder (.schemathesis/) where it runs; not in the repository.
        result = subprocess.run(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
        )
    text = report.read_text()
    summary = text[text.rfind("SUMMARY") :] if "SUMMARY" in text else text[-3000:]
    print(summary)
    assert result.returncode == 0, f"schemathesis failed (full report: {report}):\n{text[-12000:]}"
    spec = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    documented = sum(len(methods) for methods in spec["paths"].values())
    found = re.search(r"Operations:\s+(\d+) selected / (\d+) total", text)
    assert found, text[:2000]
    selected, total = int(found.group(1)), int(found.group(2))
    # Every operation is selected and tested; the CLI leaves out only the document it was pointed at.
    assert selected == total >= documented - 1, (selected, total, documented)
    assert f"Tested: {total}" in summary, summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):  # every phase ran and passed
        assert f"✅ {phase}" in summary, summary
