"""`make soak`: the real server on Cassandra at half its capacity for 30 minutes, then every answer checked.

Starts a Cassandra node of its own (scripts/cassandra.sh on free loopback ports, data in var/soak-cassandra,
deleted afterwards), `mnist db init`, and `mnist serve` with that store; measures the capacity with wrk
(closed loop, PNG uploads of MNIST test digits to /predict), then sends the same uploads open loop at half of
it for --duration, with a progress line a minute (rate, errors, p50/p99, resident memory, open files). After
SIGTERM (the server drains its write queue) it reads every answered id back from Cassandra. Writes the
"Soak" block of BENCHMARKS.md, under "Measured by other scripts" (which `make bench` keeps), and exits 1
when a check fails.

    .venv/bin/python scripts/soak.py --duration 1800     # make soak
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402  (scripts/bench.py: server start, wrk runs, /proc figures)
from cassandra.cluster import Cluster  # noqa: E402
from cassandra.concurrent import execute_concurrent_with_args  # noqa: E402

from service.settings import Settings  # noqa: E402
from service.store.cassandra.session import make_cluster  # noqa: E402
from service.store.cassandra.url import parse_url  # noqa: E402
from service.store.factory import spooled_cassandra  # noqa: E402

CASSANDRA = ROOT / "scripts" / "cassandra.sh"
STATE = ROOT / "var" / "soak-cassandra"
KEYSPACE = "soak"
SENDERS = 32  # threads sending, each on its own keep-alive connection
PROBE_CONCURRENCY = 32
# What "no growth" means: after the first tenth of the run (allocator and caches warm), resident memory
# may grow by at most this fraction plus a few pages, open files by at most this many.
RSS_GROWTH_MAX = 0.10
RSS_SLACK_BYTES = 16 * 1024 * 1024
FD_GROWTH_MAX = 8
READ_ROUNDS = 5
# The block in BENCHMARKS.md this script owns; it sits in the part `make bench` keeps (after BY_HAND).
BLOCK_START, BLOCK_END = "<!-- soak: scripts/soak.py -->", "<!-- /soak -->"


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Sample:
    """The server's processes at one moment."""

    at_s: float
    rss: int
    pss: int
    fds: int
    threads: int
    processes: int

    @classmethod
    def of(cls, pid: int, at_s: float) -> Sample:
        pids = bench.process_tree(pid)
        fds = threads = 0
        for p in pids:
            fds += len(os.listdir(f"/proc/{p}/fd"))
            threads += len(os.listdir(f"/proc/{p}/task"))
        rss = bench.server_rss(pid)
        return cls(at_s, rss["total"], rss["pss"], fds, threads, len(pids))

    def line(self) -> str:
        return (
            f"RSS {self.rss / 2**20:.0f} MiB (PSS {self.pss / 2**20:.0f} MiB), {self.fds} open files, "
            f"{self.threads} threads in {self.processes} processes"
        )


@dataclass
class Sender:
    """One thread's share of the requests: every SENDERS-th send time, on one keep-alive connection."""

    port: int
    bodies: list[bytes]
    content_type: str
    results: list[tuple[float, int, float, str | None]] = field(default_factory=list)  # t, status, ms, id
    late: int = 0

    def run(self, index: int, start: float, rate: float, total: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for i in range(index, total, SENDERS):
            due = start + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1.0:
                self.late += 1  # this connection is still busy with earlier answers: the server is behind
            began = time.monotonic()
            status, record_id = self.post(conn, self.bodies[i % len(self.bodies)])
            if status == 0:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.results.append((began - start, status, (time.monotonic() - began) * 1000, record_id))
        conn.close()

    def post(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, str | None]:
        try:
            conn.request("POST", "/predict?model=cnn", body, {"Content-Type": self.content_type})
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            return 0, None
        if response.status != 200:
            return response.status, None
        return 200, str(json.loads(payload)["id"])


def multipart(png: bytes, boundary: str) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + png + f"\r\n--{boundary}--\r\n".encode()


def cassandra(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(CASSANDRA), *args], check=True, env=env, cwd=ROOT)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def spooled_records(folder: Path) -> int:
    """Records still waiting in the server's spool files (none, when Cassandra took every write)."""
    total = 0
    for path in folder.glob("spool-*.db"):
        with sqlite3.connect(path) as conn:
            total += int(conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
    return total


def replay_spool(url: str, folder: Path) -> float:
    """What the server's next start would do: adopt the spool files it left and replay them into Cassandra."""
    started = time.monotonic()
    store = spooled_cassandra(replace(parse_url(url), spool_dir=folder))
    try:
        log(f"replaying {store.spool.depth:,} records the server left in its spool")
        if not store.wait_for_replay(900):
            raise SystemExit(f"the spool did not empty within 900 s ({store.spool.depth} records left)")
    finally:
        store.close()
    return time.monotonic() - started


def check_records(url: str, ids: list[str]) -> tuple[int, float]:
    """How many of `ids` Cassandra holds (read back at the store's consistency), and the seconds it took.

    A read that times out (a busy machine) is asked again, up to READ_ROUNDS times; only a read that
    answers "no such row" counts as missing.
    """
    started = time.monotonic()
    cluster: Cluster = make_cluster(parse_url(f"{url}?timeout=30"))
    try:
        session = cluster.connect()
        select = session.prepare(f"SELECT id FROM {KEYSPACE}.predictions WHERE id = ?")
        found = 0
        for chunk in range(0, len(ids), 20_000):
            todo = [(uuid.UUID(i),) for i in ids[chunk : chunk + 20_000]]
            for _ in range(READ_ROUNDS):
                results = execute_concurrent_with_args(
                    session, select, todo, concurrency=16, raise_on_first_error=False
                )
                found += sum(1 for ok, rows in results if ok and rows.one())
                todo = [params for params, (ok, _) in zip(todo, results, strict=True) if not ok]
                if not todo:
                    break
            if todo:
                raise SystemExit(f"{len(todo)} reads still failed after {READ_ROUNDS} rounds")
            log(f"read back {min(chunk + 20_000, len(ids)):,} of {len(ids):,} ids: {found:,} found")
    finally:
        cluster.shutdown()
    return found, time.monotonic() - started


def queue_depth(url: str) -> float:
    """Records waiting in the server's write queues (mnist_write_queue_depth, summed over live workers)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("mnist_write_queue_depth")
    )


def sustained_capacity(url: str, png_dir: Path, count: int, seconds: float) -> tuple[float, float]:
    """Predictions/s over HTTP alone (wrk), and with every record in Cassandra too: wrk's answers divided by
    wrk's time plus the time the write queues then take to empty (a queue hides a slow store for a while)."""
    started = time.monotonic()
    probe = bench.run_wrk(url, png_dir, count, "/predict?model=cnn", PROBE_CONCURRENCY, seconds)
    answered = int(probe["requests"]) - int(probe["http_errors"])
    http = answered / (probe["duration_us"] / 1e6)
    deadline = time.monotonic() + 600
    while queue_depth(url) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return http, answered / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds at the soak rate")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the measured capacity")
    parser.add_argument("--probe-seconds", type=float, default=15, help="wrk capacity run")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-report", dest="report", action="store_false", help="print, do not write --out")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: scripts/install-system-deps.sh (Debian package wrk)")

    base = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="mnist-soak-"))
    png_dir = tmp / "pngs"
    png_dir.mkdir()
    pngs, labels = bench.write_pngs(base.data_dir, png_dir, 200)
    boundary = uuid.uuid4().hex
    bodies = [multipart(png, boundary) for png in pngs]
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]

    cql_port, storage_port, port = bench.free_port(), bench.free_port(), bench.free_port()
    node_env = {
        **os.environ,
        "CASSANDRA_STATE": str(STATE),
        "CASSANDRA_PORT": str(cql_port),
        "CASSANDRA_STORAGE_PORT": str(storage_port),
    }
    store_url = f"cassandra://cassandra:cassandra@127.0.0.1:{cql_port}/{KEYSPACE}"
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MNIST_HOST": "127.0.0.1",
        "MNIST_PORT": str(port),
        "MNIST_STORE_URL": store_url,
        "MNIST_SPOOL_DIR": str(tmp / "spool"),
    }
    shutil.rmtree(STATE, ignore_errors=True)
    log(f"starting Cassandra on 127.0.0.1:{cql_port} (data in {STATE}); files in {tmp}")
    cassandra("up", env=node_env)
    proc: subprocess.Popen[bytes] | None = None
    try:
        mnist = str(Path(sys.executable).with_name("mnist"))
        subprocess.run([mnist, "db", "init", "--url", store_url, "--timeout", "120"], check=True, env=env)
        log(f"starting mnist serve on {url} with the Cassandra store")
        proc = bench.start_server(env, url, tmp / "server.log")
        replies = [bench.post_png(f"{url}/predict?model=cnn", png) for png in pngs]
        right = sum(int(r["digit"]) == y for r, y in zip(replies, labels, strict=True))
        log(f"warm-up: {right}/{len(labels)} digits right")
        http_capacity, capacity = sustained_capacity(url, png_dir, len(pngs), args.probe_seconds)
        rate = capacity * args.fraction
        total = int(rate * args.duration)
        log(
            f"capacity (wrk c={PROBE_CONCURRENCY}, {args.probe_seconds:g} s): {http_capacity:,.0f}/s over "
            f"HTTP, {capacity:,.0f}/s with every record in Cassandra; "
            f"soak at {rate:,.0f}/s for {args.duration:g} s = {total:,} requests"
        )

        senders = [Sender(port, bodies, f"multipart/form-data; boundary={boundary}") for _ in range(SENDERS)]
        start = time.monotonic() + 0.5
        threads = [
            threading.Thread(target=s.run, args=(i, start, rate, total), daemon=True)
            for i, s in enumerate(senders)
        ]
        for t in threads:
            t.start()
        samples = [Sample.of(proc.pid, 0.0)]
        log(f"soak start: {samples[0].line()}")
        warm_at = start + args.duration / 10
        warm: Sample | None = None
        end: Sample | None = None  # still under load, 10 s before the last send
        end_at = start + max(args.duration - 10, args.duration * 0.9)
        seen = [0] * SENDERS
        minutes: list[dict[str, Any]] = []
        last_line = start
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)  # a monitor, not a wait for an event: it samples /proc once a second at most
            now = time.monotonic()
            if warm is None and now >= warm_at:
                warm = Sample.of(proc.pid, now - start)
            if end is None and now >= end_at:
                end = Sample.of(proc.pid, now - start)
            if now - last_line < 60 and any(t.is_alive() for t in threads):
                continue
            batch = [r for sender, n in zip(senders, seen, strict=True) for r in sender.results[n:]]
            seen = [len(sender.results) for sender in senders]
            sample = Sample.of(proc.pid, now - start)
            samples.append(sample)
            ms = [r[2] for r in batch if r[1] == 200]
            minute = {
                "at_s": now - start,
                "rate": len(ms) / max(now - last_line, 1e-3),
                "errors": sum(r[1] != 200 for r in batch),
                "p50": percentile(ms, 50),
                "p99": percentile(ms, 99),
                "max": max(ms, default=0.0),
                "sample": sample,
            }
            minutes.append(minute)
            last_line = now
            log(
                f"{minute['at_s']:.0f} s: {minute['rate']:,.0f} answered/s, {minute['errors']} errors, "
                f"p50 {minute['p50']:.1f} ms, p99 {minute['p99']:.1f} ms; {sample.line()}"
            )
        after = Sample.of(proc.pid, time.monotonic() - start)  # idle again, like `start`
        warm = warm or samples[0]
        end = end or samples[-1]
        log(f"soak end (under load): {end.line()}; idle after it: {after.line()}")
        results = [r for s in senders for r in s.results]
        ids = [r[3] for r in results if r[1] == 200 and r[3]]
        errors: dict[int, int] = {}
        for r in results:
            if r[1] != 200:
                errors[r[1]] = errors.get(r[1], 0) + 1
        late = sum(s.late for s in senders)
        log(f"SIGTERM to the server; {len(ids):,} answered, errors {errors or 'none'}, {late} sends late")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        exit_code = proc.returncode
        proc = None
        spooled = spooled_records(tmp / "spool")
        replayed_s = replay_spool(store_url, tmp / "spool") if spooled else 0.0
        server_log = (tmp / "server.log").read_text(errors="replace")
        not_stored = sum(
            int(n) for n in re.findall(r"write queue not drained within [\d.]+s: (\d+) records", server_log)
        )
        found, check_s = check_records(store_url, ids)
    finally:
        if proc is not None:
            proc.kill()
        cassandra("kill", env=node_env)
        shutil.rmtree(STATE, ignore_errors=True)

    all_ms = [r[2] for r in results if r[1] == 200]
    rss_bound = warm.rss * (1 + RSS_GROWTH_MAX) + RSS_SLACK_BYTES
    checks = {
        "every answered prediction is in Cassandra": found == len(ids),
        "no request failed": not errors,
        f"resident memory at the end <= {RSS_GROWTH_MAX:.0%} + 16 MiB over the warm figure": end.rss
        <= rss_bound,
        f"open files at the end <= {FD_GROWTH_MAX} over the warm figure": end.fds <= warm.fds + FD_GROWTH_MAX,
        f"open files once idle again <= {FD_GROWTH_MAX} over the start": after.fds
        <= samples[0].fds + FD_GROWTH_MAX,
        "server exited 0 on SIGTERM": exit_code == 0,
    }
    for name, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {name}")
    body = render(
        args,
        capacity=capacity,
        rate=rate,
        sent=len(results),
        answered=len(ids),
        errors=errors,
        late=late,
        all_ms=all_ms,
        samples=(samples[0], warm, end, after),
        minutes=minutes,
        found=found,
        replayed_s=replayed_s,
        not_stored=not_stored,
        http_capacity=http_capacity,
        check_s=check_s,
        spooled=spooled,
        checks=checks,
        loadavg=(loadavg_before, Path("/proc/loadavg").read_text().split()[:3]),
    )
    if args.report:
        bench.replace_block(args.out, body, BLOCK_START, BLOCK_END)
        log(f"wrote the soak block of {args.out}")
    else:
        print(body)
    return 0 if all(checks.values()) else 1


def render(args: argparse.Namespace, **r: Any) -> str:
    start, warm, end, after = r["samples"]
    by_status = f" (by status: {r['errors']})" if r["errors"] else ""
    load_before, load_after = (" ".join(x) for x in r["loadavg"])
    mib = 2**20

    def row(name: str, s: Sample) -> str:
        return (
            f"| {name} | {s.at_s:,.0f} | {s.rss / mib:,.0f} | {s.pss / mib:,.0f} | {s.fds} | {s.threads} |"
            f" {s.processes} |"
        )

    lines = [
        f"### Soak (Cassandra, half of capacity, {args.duration / 60:g} min)",
        "",
        "Written by `make soak` (scripts/soak.py); `make bench` keeps it.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {bench.git_commit()}",
        f"- Machine: {bench.machine()}; load average before: {load_before}, after: {load_after}",
        f"- Command: `{shlex.join(['python', 'scripts/soak.py', *sys.argv[1:]])}`",
        "- Server: `mnist serve` defaults, Cassandra 5.0 single node (scripts/cassandra.sh) as the store; "
        "PNG uploads of 200 MNIST test digits to `POST /predict?model=cnn`",
        f"- Capacity (wrk, closed loop, {PROBE_CONCURRENCY} connections, {args.probe_seconds:g} s): "
        f"{r['http_capacity']:,.0f}/s over HTTP, {r['capacity']:,.0f}/s with every record in Cassandra "
        f"(until the write queues were empty); soak rate {args.fraction:.0%} of it = {r['rate']:,.0f}/s, "
        f"open loop from {SENDERS} keep-alive connections, for {args.duration / 60:g} min",
        f"- Sent {r['sent']:,}, answered {r['answered']:,}, failed {sum(r['errors'].values())}{by_status}; "
        f"{r['late']} sends more than 1 s late (a connection still waiting)",
        f"- Latency of the answered: p50 {percentile(r['all_ms'], 50):.1f} ms, p99 "
        f"{percentile(r['all_ms'], 99):.1f} ms, max {max(r['all_ms'], default=0):.0f} ms",
        f"- Records: {r['found']:,} of {r['answered']:,} answered ids read back from Cassandra after SIGTERM "
        f"({r['check_s']:.0f} s); {r['spooled']} of them had been left in the spool and were replayed first "
        f"({r['replayed_s']:.0f} s), as the next start does; the server logged "
        f"{r['not_stored']} records the write queues had not stored by the drain deadline (handed to the "
        "spool, never dropped)",
        "",
        "The server's processes (gunicorn master and workers): resident memory (RSS, shared pages counted in "
        'each process; PSS splits them), open file descriptors, threads. "start" and "idle after" have no '
        'client connected; "warm" (after the first tenth of the run, the figure growth is measured from) and '
        '"end" (10 s before the last send) have the 32 keep-alive connections open.',
        "",
        "| moment | s | RSS MiB | PSS MiB | open files | threads | processes |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("start", start),
        row("warm", warm),
        row("end", end),
        row("idle after", after),
        "",
        "| minute | answered/s | errors | p50 ms | p99 ms | max ms | RSS MiB | open files |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in r["minutes"]:
        s = m["sample"]
        lines.append(
            f"| {m['at_s'] / 60:.1f} | {m['rate']:,.0f} | {m['errors']} | {m['p50']:.1f} | "
            f"{m['p99']:.1f} | {m['max']:.0f} | {s.rss / mib:,.0f} | {s.fds} |"
        )
    lines += ["", "Checks:", ""]
    lines += [f"- {'passed' if ok else '**failed**'}: {name}" for name, ok in r["checks"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
