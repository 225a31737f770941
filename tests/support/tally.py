"""One pass/fail count for `make test`, which runs several pytest sessions (main, cluster, ...) and lint.

Each session writes its counts to $MNIST_TEST_TALLY/<name>.json at its end (the conftest hook calls
`record`); `python -m tests.support.tally DIR` adds them up, prints one line per session and a total, and
exits 1 when anything failed, errored, or a session that `make test` started left no counts behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TALLY_ENV = "MNIST_TEST_TALLY"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
BAD = ("failed", "error", "xpassed")


def record(name: str, stats: dict[str, list[Any]], exit_status: int) -> Path | None:
    """Write one session's counts (pytest's terminal-reporter stats) where `make test` collects them."""
    folder = os.environ.get(TALLY_ENV)
    if not folder:
        return None
    counts = {outcome: len(stats.get(outcome, [])) for outcome in OUTCOMES}
    # A session that collected nothing, or was interrupted, must not read as a pass.
    counts["exit_status"] = int(exit_status)
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(counts))
    return path


def summarize(folder: Path, expected: list[str]) -> tuple[list[str], bool]:
    """Lines to print and whether everything passed."""
    lines: list[str] = []
    total = dict.fromkeys(OUTCOMES, 0)
    ok = True
    found = sorted(p.stem for p in folder.glob("*.json"))
    for name in [*expected, *(n for n in found if n not in expected)]:
        path = folder / f"{name}.json"
        if name == "lint":
            status = path.read_text().strip() if path.is_file() else "not run"
            ok &= status == "ok"
            lines.append(f"  {'lint':<10} {status}")
            continue
        if not path.is_file():
            ok = False
            lines.append(f"  {name:<10} did not report (crashed, or interrupted before its end)")
            continue
        counts = json.loads(path.read_text())
        for outcome in OUTCOMES:
            total[outcome] += counts[outcome]
        ok &= counts["exit_status"] == 0 and not any(counts[b] for b in BAD)
        lines.append(f"  {name:<10} {_counts(counts)} (pytest exit {counts['exit_status']})")
    verdict = "PASSED" if ok else "FAILED"
    # The total comes last, as one word, a colon and pytest's own "N passed, N failed" wording: the line a CI
    # reader of several sessions' output looks for.
    return ["make test, per session:", *lines, f"{verdict}: {_counts(total)}"], ok


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(
        f"{counts[o]} {o}" for o in OUTCOMES if counts[o] or o in ("passed", "failed", "skipped")
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m tests.support.tally DIR SESSION...", file=sys.stderr)
        return 2
    lines, ok = summarize(Path(argv[0]), argv[1:])
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
