"""Measure the Cassandra store as the service uses it: write latency and sustained records per second.

    make cassandra-up && .venv/bin/python scripts/cassandra_bench.py [--records 20000]

Writes into a scratch keyspace (dropped at the end) on the node of `--url`:
- latency: `record()` of one record at a time (its 3-4 statements run concurrently), p50/p99/max;
- throughput: `record_many()` with batches of 256, as the write queue hands them over, records/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from service.store.base import PredictionRecord
from service.store.cassandra.url import parse_url
from service.store.factory import spooled_cassandra


def records(n: int) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    rng = np.random.default_rng(0)
    return [
        PredictionRecord(
            id=uuid.uuid4(),
            created=now + timedelta(milliseconds=i),
            model="cnn",
            version="1",
            digit=i % 10,
            confidence=0.9,
            probabilities=tuple(float(p) for p in rng.dirichlet(np.ones(10))),
            pixels=rng.integers(0, 256, 784, dtype=np.uint8).tobytes(),
            latency_ms=0.4,
            client="127.0.0.1",
            request_id=uuid.uuid4().hex,
            extra={"api": "predict"},
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="cassandra://cassandra:cassandra@127.0.0.1:9042/bench")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--latency-samples", type=int, default=1_000)
    args = parser.parse_args()
    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    config = parse_url(args.url.rsplit("/", 1)[0] + f"/{keyspace}")
    with tempfile.TemporaryDirectory() as spool:
        from dataclasses import replace

        store = spooled_cassandra(replace(config, spool_dir=Path(spool)))
        if store.inner._stmts is None:
            raise SystemExit(f"Cassandra at {config.endpoint} is not reachable: {store.inner.last_error}")
        try:
            warm = records(200)
            store.record_many(warm)
            latencies = []
            for rec in records(args.latency_samples):
                started = time.perf_counter()
                store.record(rec)
                latencies.append((time.perf_counter() - started) * 1000)
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"record(): one record, {len(latencies)} samples: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                  f"max {max(latencies):.2f} ms")  # fmt: skip
            batch = records(args.records)
            started = time.perf_counter()
            for i in range(0, len(batch), 256):
                store.record_many(batch[i : i + 256])
            seconds = time.perf_counter() - started
            rate = len(batch) / seconds
            print(f"record_many(): {len(batch)} records in {seconds:.1f} s = {rate:.0f} records/s "
                  f"(max_in_flight {config.max_in_flight}); spooled: {store.spool.depth}")  # fmt: skip
        finally:
            session = store.inner._stmts.session if store.inner._stmts else None
            if session is not None:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
            store.close()


if __name__ == "__main__":
    main()
