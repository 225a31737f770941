"""The cost of each `MNIST_DURABILITY` mode (memory, disk, store): the "Durability" block of BENCHMARKS.md.

For each mode a fresh `mnist serve` (SQLite store in a temporary folder, the journal in its spool folder)
takes the same closed-loop wrk load (PNG uploads to /predict?model=cnn) at each concurrency; the block
gives predictions/s, p50/p99 and the server's CPU per request, and checks after SIGTERM that every answered
prediction was stored. `make bench` calls `run()` after its own report (scripts/bench.py); alone:

    .venv/bin/python scripts/bench_durability.py --seconds 10 --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402  (server start, wrk runs, /proc figures)

from service.settings import Settings  # noqa: E402

MODES = ("memory", "disk", "store")
MODEL = "cnn"
BLOCK_START = "<!-- durability: written by scripts/bench_durability.py -->"
BLOCK_END = "<!-- /durability -->"


@dataclass
class ModeRun:
    mode: str
    run: bench.Run
    stored: int
    answered: int


def log(message: str) -> None:
    print(f"[durability {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def measure(mode: str, png_dir: Path, count: int, levels: list[int], seconds: float) -> list[ModeRun]:
    """One server in `mode`: a warm-up, then one wrk run per concurrency, then SIGTERM and a record count."""
    tmp = Path(tempfile.mkdtemp(prefix=f"mnist-durability-{mode}-"))
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MNIST_HOST": "127.0.0.1",
        "MNIST_PORT": str(port),
        "MNIST_GRPC_PORT": "0",
        "MNIST_STORE_URL": f"sqlite:///{tmp / 'predictions.db'}",
        "MNIST_SPOOL_DIR": str(tmp / "spool"),
        "MNIST_DURABILITY": mode,
    }
    proc = bench.start_server(env, url, tmp / "server.log")
    runs: list[bench.Run] = []
    answered = 0
    try:
        warm = bench.run_wrk(url, png_dir, count, f"/predict?model={MODEL}", 8, 3)
        answered += int(warm["requests"]) - int(warm["http_errors"])
        for c in levels:
            cpu = bench.cpu_seconds(proc.pid)
            result = bench.run_wrk(url, png_dir, count, f"/predict?model={MODEL}", c, seconds)
            run = bench.Run(MODEL, c, result, bench.cpu_seconds(proc.pid) - cpu, 0.0, f"durability {mode}")
            answered += run.ok
            runs.append(run)
            log(
                f"{mode} c={c}: {run.rps:,.0f}/s p50 {run.ms('p50_us'):.2f} ms p99 {run.ms('p99_us'):.2f} ms "
                f"errors {run.errors}, server CPU {run.cpu_ms_per_request:.2f} ms/request"
            )
    finally:
        bench.stop_server(proc)
    with sqlite3.connect(tmp / "predictions.db") as conn:
        stored = int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])
    shutil.rmtree(tmp, ignore_errors=True)
    return [ModeRun(mode, run, stored, answered) for run in runs]


def fsync_ms(folder: Path, rounds: int = 50) -> float:
    """Median latency of a 512-byte write + fsync in `folder` (what one group commit costs at least)."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)[len(times) // 2]


def render(results: list[ModeRun], seconds: float, command: str, fsync: tuple[float, float]) -> str:
    workers = Settings().workers
    lines = [
        "### Durability of an answered prediction (MNIST_DURABILITY)",
        "",
        "Written by scripts/bench_durability.py (`make bench` runs it after its own report; alone: "
        f"`{command}`).",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; commit {bench.git_commit()}",
        f"- Machine: {bench.machine()}",
        f"- Server: `mnist serve` defaults ({workers} workers), SQLite store, one fresh server per mode; wrk "
        f"{seconds:g} s per row, closed loop, PNG uploads to `POST /predict?model={MODEL}`.",
        "- memory: the record is in the write queue when the answer leaves; disk: in the worker's journal "
        "(SQLite WAL, fsync per group commit); store: acknowledged by the store (the write queue's batch).",
        "- Timings are wall clock on a machine shared with other work (see load average): compare the modes "
        "by the CPU column first.",
        f"- One write + fsync in the journal's folder (median of 50): {fsync[0]:.2f} ms before the runs, "
        f"{fsync[1]:.2f} ms after; a `disk` answer waits for at least one.",
        "",
        "| mode | concurrency | predictions/s | p50 ms | p99 ms | errors | server CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        run = r.run
        lines.append(
            f"| {r.mode} | {run.concurrency} | {run.rps:,.0f} | {run.ms('p50_us'):.2f} | "
            f"{run.ms('p99_us'):.2f} | {run.errors} | {run.cpu_ms_per_request:.2f} |"
        )
    lines.append("")
    seen: set[str] = set()
    for r in results:
        if r.mode in seen:
            continue
        seen.add(r.mode)
        lines.append(f"- {r.mode}: {r.stored:,} records stored of {r.answered:,} answered, after SIGTERM.")
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines.append(f"- Load average at the end: {loadavg}.")
    return "\n".join(lines) + "\n"


def run(out: Path, seconds: float, levels: list[int], pngs: int = 200, command: str = "") -> list[ModeRun]:
    """Measure every mode and write the block of `out`."""
    tmp = Path(tempfile.mkdtemp(prefix="mnist-durability-"))
    png_dir = tmp / "pngs"
    png_dir.mkdir()
    bench.write_pngs(Settings().data_dir, png_dir, pngs)
    results: list[ModeRun] = []
    started = time.monotonic()
    fsync_before = fsync_ms(tmp)
    try:
        for mode in MODES:
            log(f"{mode}: starting a server ({time.monotonic() - started:.0f} s so far)")
            results += measure(mode, png_dir, pngs, levels, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_after = fsync_ms(Path(tempfile.gettempdir()))
    for r in results:
        if r.stored < r.answered:
            raise SystemExit(f"{r.mode}: {r.answered - r.stored} answered predictions were not stored")
    command = command or "python scripts/bench_durability.py " + " ".join(sys.argv[1:])
    body = render(results, seconds, command.strip(), (fsync_before, fsync_after))
    bench.replace_block(out, body, BLOCK_START, BLOCK_END)
    log(f"wrote the durability block of {out} in {time.monotonic() - started:.0f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: scripts/install-system-deps.sh (Debian package wrk)")
    run(args.out, args.seconds, [int(c) for c in args.concurrency.split(",") if c])


if __name__ == "__main__":
    main()
