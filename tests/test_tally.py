"""`make test`'s one total over its sessions (tests/support/tally.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tally import summarize


def _session(folder: Path, name: str, exit_status: int = 0, **counts: int) -> None:
    row = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "xfailed": 0, "xpassed": 0, **counts}
    (folder / f"{name}.json").write_text(json.dumps({**row, "exit_status": exit_status}))


def test_the_total_adds_every_session_and_ends_in_pytests_wording(tmp_path: Path) -> None:
    (tmp_path / "lint.json").write_text("ok")
    _session(tmp_path, "main", passed=900, skipped=0)
    _session(tmp_path, "k8s", passed=13)
    lines, ok = summarize(tmp_path, ["lint", "main", "k8s"])
    assert ok
    assert lines[-1] == "PASSED: 913 passed, 0 failed, 0 skipped"


def test_a_failure_a_failed_lint_or_a_silent_session_fails_the_total(tmp_path: Path) -> None:
    (tmp_path / "lint.json").write_text("ok")
    _session(tmp_path, "main", passed=10, failed=1, exit_status=1)
    lines, ok = summarize(tmp_path, ["lint", "main"])
    assert not ok and lines[-1] == "FAILED: 10 passed, 1 failed, 0 skipped"

    (tmp_path / "main.json").unlink()
    _session(tmp_path, "main", passed=10)
    (tmp_path / "lint.json").write_text("failed")
    assert not summarize(tmp_path, ["lint", "main"])[1]

    (tmp_path / "lint.json").write_text("ok")
    lines, ok = summarize(tmp_path, ["lint", "main", "cluster"])
    assert not ok and any("cluster" in line and "did not report" in line for line in lines)
