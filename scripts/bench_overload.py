"""`make bench`'s overload section: shed rate and accepted latency at 1x, 2x and 3x the measured capacity.

Called by scripts/bench.py (or alone: `python scripts/bench_overload.py`, which rewrites only this section
of BENCHMARKS.md). Starts `mnist serve` with admission control (MNIST_MAX_INFLIGHT per worker, threads
enough that no request waits in gunicorn's own queue), measures the unloaded latency and the capacity
(what it accepts per second when offered far more), then offers 1x, 2x and 3x that capacity open loop
from tests/loadgen.py (its own process, fixed rate: a slow answer does not slow the offer down), 16 MNIST
digits per request to the own API. The same 3x once more with admission off shows what it buys. After each
server's SIGTERM every accepted prediction is looked up in its SQLite store.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.data import load_mnist  # noqa: E402

HEADING = "## Overload: admission control"
IMAGES = 16  # per request: the model's work, not HTTP's, decides the capacity
WORKERS = 2
THREADS = 32
MAX_INFLIGHT = 4
MAX_BATCH = (
    8  # as tests/test_overload.py: short model calls, less Python work per batch for a shed to wait on
)
CONNECTIONS = 64  # the load generator's requests in flight at most
PROBE_RATE = 400.0  # requests/s: far above what 2 cores can answer at 16 images each
LEVELS = (1.0, 2.0, 3.0)
Starter = Callable[[dict[str, str], str, Path], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Row:
    admission: str
    level: str
    offered: float  # requests/s sent
    results: list[dict[str, Any]]
    seconds: float
    stored: int = 0

    def of(self, status: int) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == status]

    def ms(self, status: int, q: float) -> float:
        values = [r["ms"] for r in self.of(status)]
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def others(self) -> int:
        return len(self.results) - len(self.of(200)) - len(self.of(503))

    @property
    def accepted_ids(self) -> set[str]:
        return {i for r in self.of(200) for i in r["ids"]}


def log(message: str) -> None:
    print(f"[bench overload {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_bodies(data_dir: Path, path: Path, count: int = 20) -> Path:
    images = load_mnist(data_dir).test_images
    lines = [
        json.dumps([{"pixels": images[(i * IMAGES + j) % len(images)].tolist()} for j in range(IMAGES)])
        for i in range(count)
    ]
    path.write_text("\n".join(lines))
    return path


def load(url: str, bodies: Path, out: Path, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.loadgen", f"{url}/predict", str(bodies), str(out)]
    options = ["--rate", f"{rate:.1f}", "--seconds", f"{seconds:g}", "--connections", str(connections)]
    subprocess.run([*command, *options, "--timeout", "10"], cwd=ROOT, check=True, timeout=seconds + 120)
    return dict(json.loads(out.read_text()))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_and_load(
    start: Starter, env: dict[str, str], url: str, work: Path, bound: int, levels: tuple[float, ...],
    seconds: float, capacity: float | None,
) -> tuple[list[Row], float, float]:  # fmt: skip
    """One server with MNIST_MAX_INFLIGHT=bound: its rows, the capacity used and the unloaded p99."""
    name = f"inflight-{bound}"
    db = work / f"{name}.db"
    server_env = {
        **env,
        "MNIST_WORKERS": str(WORKERS),
        "MNIST_THREADS": str(THREADS),
        "MNIST_MAX_INFLIGHT": str(bound),
        "MNIST_MAX_BATCH_SIZE": str(MAX_BATCH),
        "MNIST_MODEL_POLL_S": "0",
        "MNIST_STORE_URL": f"sqlite:///{db}",
    }
    bodies = work / "bodies.jsonl"
    proc = start(server_env, url, work / f"{name}.log")
    rows: list[Row] = []
    try:
        quiet = load(url, bodies, work / f"{name}-unloaded.json", 10, 5, 1)
        unloaded_p99 = float(np.percentile([r["ms"] for r in quiet["results"] if r["status"] == 200], 99))
        if capacity is None:
            probe = load(url, bodies, work / f"{name}-probe.json", PROBE_RATE, 5, CONNECTIONS)
            capacity = sum(r["status"] == 200 for r in probe["results"]) / float(probe["seconds"])
            log(f"capacity {capacity:.0f} requests/s ({capacity * IMAGES:.0f} images/s); unloaded p99 "
                f"{unloaded_p99:.1f} ms")  # fmt: skip
        for level in levels:
            rate = level * capacity
            summary = load(url, bodies, work / f"{name}-{level:g}x.json", rate, seconds, CONNECTIONS)
            row = Row(
                "on" if bound else "off", f"{level:g}x", rate, summary["results"], float(summary["seconds"])
            )
            rows.append(row)
            log(f"admission {row.admission} {row.level}: accepted {len(row.of(200)) / row.seconds:.0f}/s "
                f"p99 {row.ms(200, 99):.1f} ms, shed {len(row.of(503))}, others {row.others}")  # fmt: skip
    finally:
        stop(proc)
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM predictions")}
    rows = [
        Row(r.admission, r.level, r.offered, r.results, r.seconds, len(r.accepted_ids & stored)) for r in rows
    ]
    return rows, capacity, unloaded_p99


def shed_server_ms(log_path: Path) -> list[float]:
    """The worker's own time for each shed answer (the access log's latency_ms of every 503)."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("status") == 503 and "latency_ms" in entry:
            found.append(float(entry["latency_ms"]))
    return found


def measure(
    start: Starter, env: dict[str, str], url: str, data_dir: Path, work: Path, seconds: float
) -> list[str]:
    """Run the overload rows against servers started by `start(env, url, log_path)`; the section's lines."""
    work.mkdir(parents=True, exist_ok=True)
    write_bodies(data_dir, work / "bodies.jsonl")
    loadavg = [Path("/proc/loadavg").read_text().split()[0]]
    rows, capacity, unloaded_p99 = serve_and_load(start, env, url, work, MAX_INFLIGHT, LEVELS, seconds, None)
    off, _, _ = serve_and_load(start, env, url, work, 0, (3.0,), seconds, capacity)
    loadavg.append(Path("/proc/loadavg").read_text().split()[0])
    shed_ms = shed_server_ms(work / f"inflight-{MAX_INFLIGHT}.log")
    return render([*rows, *off], capacity, unloaded_p99, seconds, loadavg, shed_ms)


def render(
    rows: list[Row],
    capacity: float,
    unloaded_p99: float,
    seconds: float,
    loadavg: list[str],
    shed_ms: list[float],
) -> list[str]:
    server_side = (
        f"The workers' own time per shed answer (access log, every row): p50 "
        f"{np.percentile(shed_ms, 50):.2f} ms, p99 {np.percentile(shed_ms, 99):.2f} ms, "
        f"max {max(shed_ms):.1f} ms, "
        f"{sum(ms > 10 for ms in shed_ms) / len(shed_ms):.2%} over 10 ms."
        if shed_ms
        else ""
    )
    lines = [
        HEADING,
        "",
        f"`scripts/bench_overload.py`: {WORKERS} workers x {THREADS} threads, MNIST_MAX_INFLIGHT="
        f"{MAX_INFLIGHT} per worker, model calls of <= {MAX_BATCH} images; tests/loadgen.py offers a fixed "
        f"rate (open loop, at most {CONNECTIONS} requests in flight) of POST /predict with {IMAGES} MNIST "
        f"digits each (JSON pixels), {seconds:g} s per row. Capacity, measured first (accepted requests/s "
        f"when offered {PROBE_RATE:.0f}/s): "
        f"{capacity:.0f} requests/s = {capacity * IMAGES:,.0f} images/s; unloaded p99 {unloaded_p99:.1f} ms "
        "(one request at a time). The last row offers 3x with admission off (MNIST_MAX_INFLIGHT=0): the "
        "requests then queue. Latencies are the load generator's (client side), on the same 2 shared cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1-minute load average {loadavg[0]} before, "
        f"{loadavg[-1]} after (other work on the machine slows both sides). {server_side}",
        "",
        "| admission | offered | offered req/s | accepted req/s | shed | accepted p50 ms | accepted p99 ms "
        "| shed p99 ms | other errors | accepted ids in the store |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shed = len(r.of(503)) / max(len(r.results), 1)
        shed_p99 = f"{r.ms(503, 99):.1f}" if r.of(503) else "—"
        lines.append(
            f"| {r.admission} | {r.level} | {r.offered:.0f} | {len(r.of(200)) / r.seconds:.0f} | {shed:.0%} "
            f"| {r.ms(200, 50):.1f} | {r.ms(200, 99):.1f} | {shed_p99} | {r.others} "
            f"| {r.stored:,} of {len(r.accepted_ids):,} |"
        )
    return [*lines, ""]


def kept_section(path: Path) -> list[str]:
    """This section of the previous report (bench.py keeps it when the overload rows are not run)."""
    text = path.read_text() if path.is_file() else ""
    start = text.find(f"\n{HEADING}\n")
    if start < 0:
        return []
    end = text.find("\n## ", start + 1)
    return [*text[start + 1 : end if end >= 0 else len(text)].rstrip("\n").splitlines(), ""]


def splice(text: str, lines: list[str]) -> str:
    """The report with this section replaced (or put before the hand-kept part when it had none)."""
    section = "\n".join(lines).rstrip("\n") + "\n\n"
    start = text.find(f"\n{HEADING}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        return text[: start + 1] + section + (text[end + 1 :] if end >= 0 else "")
    cut = text.find("\n## Measured by other scripts\n")
    return text[: cut + 1] + section + text[cut + 1 :] if cut >= 0 else f"{text}\n{section}"


def main() -> None:
    """Alone: measure and replace this section of BENCHMARKS.md (bench.py's other sections stay)."""
    import argparse
    import os
    import tempfile

    from bench import free_port, start_server  # scripts/bench.py, beside this file

    from service.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each row")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mnist-bench-overload-"))
    port = free_port()
    env = {**os.environ, "MNIST_HOST": "127.0.0.1", "MNIST_PORT": str(port), "MNIST_GRPC_PORT": "0",
           "MNIST_SPOOL_DIR": str(tmp / "spool")}  # fmt: skip
    lines = measure(start_server, env, f"http://127.0.0.1:{port}", Settings().data_dir, tmp, args.seconds)
    args.out.write_text(splice(args.out.read_text() if args.out.is_file() else "", lines))
    log(f"wrote the overload section of {args.out}")


if __name__ == "__main__":
    main()
