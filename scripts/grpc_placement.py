"""Where should gRPC run: in every gunicorn worker (as shipped) or in a process of its own? A measurement.

A prototype, not shipped: `--serve-grpc` runs the same servicer (service/grpc/servicer.py) on the same data
plane (`create_app`'s ServiceState: its own interpreters, micro-batcher, store and write queue) in one
plain process, next to a `mnist serve` whose workers have gRPC off. The other setup is `mnist serve` as
shipped, every worker serving gRPC on one SO_REUSEPORT port. Both take the same scripts/grpc_load.py load
(ModelInfer, UINT8 digits, 1 or 32 per call, concurrency 1 and 32); the server side's CPU (every process
of both setups, /proc utime + stime) per request and the throughput are compared. The figures and the
decision are in BENCHMARKS.md ("gRPC: in the workers or in a process of its own").

    .venv/bin/python scripts/grpc_placement.py --seconds 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_seconds, free_port, process_tree, rss_bytes, run_grpc, start_server

from service.data import load_mnist
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ROWS = ((1, 1), (1, 32), (32, 1), (32, 32))  # (images per call, calls in flight)


def serve_grpc() -> None:
    """The separate gRPC process: one ServiceState and the servicer, until SIGTERM."""
    import signal
    import threading

    from service.app import create_app, shutdown, state_of
    from service.grpc import server as grpc_server

    settings = Settings()
    app = create_app(settings)
    state = state_of(app)
    assert state is not None
    server = grpc_server.start(state, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    grpc_server.stop(server, 5)
    shutdown(app, 10)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def setup(kind: str, workers: int, folder: Path) -> Iterator[tuple[str, list[int]]]:
    """`in-worker` or `own-process`: yields the gRPC target and the pids whose CPU counts as the server's."""
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "MNIST_HOST": "127.0.0.1",
        "MNIST_PORT": str(http_port),
        "MNIST_WORKERS": str(workers),
        "MNIST_GRPC_PORT": str(grpc_port) if kind == "in-worker" else "0",
        "MNIST_STORE_URL": f"sqlite:///{folder / 'predictions.db'}",
        "MNIST_SPOOL_DIR": str(folder / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
    }
    served = start_server(env, f"http://127.0.0.1:{http_port}", folder / f"{kind}-serve.log")
    procs = [served]
    try:
        if kind == "own-process":
            own = {**env, "MNIST_GRPC_PORT": str(grpc_port)}
            with (folder / "grpc-process.log").open("wb") as out:
                command = [sys.executable, __file__, "--serve-grpc"]
                procs.append(subprocess.Popen(command, env=own, stdout=out, stderr=subprocess.STDOUT))
        yield f"127.0.0.1:{grpc_port}", [p.pid for p in procs]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(60)


def measure(target: str, pids: list[int], data: Path, images: int, concurrency: int, seconds: float) -> dict:
    before = sum(cpu_seconds(p) for p in pids)
    result = run_grpc(target, data, "cnn", images, concurrency, seconds)
    cpu = sum(cpu_seconds(p) for p in pids) - before
    ok = int(result["requests"]) - int(result["http_errors"])
    return {
        "images": images,
        "concurrency": concurrency,
        "requests_per_s": ok / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "errors": int(result["http_errors"]),
        "cpu_ms_per_request": 1000 * cpu / max(ok, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-grpc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per row")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of both setups")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both setups")
    args = parser.parse_args()
    if args.serve_grpc:
        serve_grpc()
        return
    with tempfile.TemporaryDirectory(prefix="grpc-placement-") as tmp:
        folder = Path(tmp)
        data = folder / "digits.npy"
        np.save(data, load_mnist(Settings().data_dir).test_images[:2000])
        rows: list[tuple[str, int, dict]] = []
        rss: dict[str, int] = {}
        for round_no in range(1, args.rounds + 1):
            for kind in ("in-worker", "own-process"):
                run_dir = folder / f"{kind}-{round_no}"
                (run_dir / "metrics").mkdir(parents=True)
                with setup(kind, args.workers, run_dir) as (target, pids):
                    run_grpc(target, data, "cnn", 1, 4, 2)  # warm-up (and the process is ready)
                    for images, concurrency in ROWS:
                        row = measure(target, pids, data, images, concurrency, args.seconds)
                        rows.append((kind, round_no, row))
                        rss[kind] = sum(rss_bytes(p) for pid in pids for p in process_tree(pid))
                        log(
                            f"round {round_no} {kind:11s} {images:2d} images c={concurrency:2d}: "
                            f"{row['requests_per_s']:7.0f} calls/s p50 {row['p50_ms']:6.2f} ms "
                            f"p99 {row['p99_ms']:7.2f} ms errors {row['errors']} "
                            f"server CPU {row['cpu_ms_per_request']:.3f} ms/call"
                        )
        for kind, total in rss.items():
            print(f"{kind}: resident memory of every server process after the rows {total / 2**20:.0f} MB")
        print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(
            "| setup | round | images/call | concurrency | calls/s | p50 ms | p99 ms | errors | CPU ms/call |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, round_no, r in rows:
            print(
                f"| {kind} | {round_no} | {r['images']} | {r['concurrency']} | {r['requests_per_s']:,.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {r['cpu_ms_per_request']:.3f} |"
            )


if __name__ == "__main__":
    main()
