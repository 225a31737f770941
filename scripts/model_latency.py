"""Latency of the shipped model.tflite files through service/runtime.py (LiteRT), as a Markdown table.

Usage: .venv/bin/python scripts/model_latency.py [--models models] [--data-dir DIR] [--repeat 300]
Real test images, one interpreter per (model, threads); median and 90th percentile over `repeat` calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from service.artifacts import discover
from service.data import load_test_set
from service.runtime import TFLiteModel
from service.settings import Settings

BATCHES = (1, 32, 64)
THREADS = (1, 2)


def measure(model: TFLiteModel, batch: np.ndarray, repeat: int) -> tuple[float, float, float]:
    """Median, p90 and best wall time (ms) of one predict() call, after warm-up calls.

    On a shared machine the median includes time spent waiting for a core; the best call is the model's cost.
    """
    for _ in range(10):
        model.predict(batch)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        model.predict(batch)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 90)), float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    images, _, _ = load_test_set(args.data_dir or Settings().data_dir)
    inputs = images.astype(np.float32) / 255.0
    print(
        "| model | size | threads | batch | median ms/call | p90 ms/call | median ms/image | best ms/image |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, versions in discover(args.models).items():
        artifact = versions[-1]
        size_kb = artifact.tflite_path.stat().st_size / 1024
        for threads in THREADS:
            model = TFLiteModel.load(artifact.tflite_path, threads=threads)
            for batch in BATCHES:
                median, p90, best = measure(model, inputs[:batch], args.repeat)
                print(
                    f"| {name} v{artifact.version} | {size_kb:,.0f} KB | {threads} | {batch} "
                    f"| {median:.3f} | {p90:.3f} | {median / batch:.4f} | {best / batch:.4f} |"
                )


if __name__ == "__main__":
    main()
