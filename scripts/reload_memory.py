"""Resident memory and CPU cost of hot reloads in one process: the shipped cnn reloaded as N new versions.

Usage: .venv/bin/python scripts/reload_memory.py [--reloads 30] [--model cnn]
Each reload copies models/<model>/1 as the next version into a temporary model directory, refreshes the
registry (checks, load, warm-up, switch, release of the old interpreter) and serves 20 batches of 32. A leak
of the retired interpreters would grow the resident memory with every reload; released ones leave a bound.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from service import metrics
from service.artifacts import METADATA
from service.inference import ModelRegistry
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def add_version(model_dir: Path, name: str, version: int) -> None:
    """models/<name>/1 copied as `version`, renamed into place as a deploy tool should."""
    import json

    staging = model_dir / name / f".incoming-{version}"
    shutil.copytree(ROOT / "models" / name / "1", staging)
    metadata = json.loads((staging / METADATA).read_text())
    (staging / METADATA).write_text(json.dumps({**metadata, "version": str(version)}))
    staging.rename(model_dir / name / str(version))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=30)
    parser.add_argument("--model", default="cnn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        (model_dir / args.model).mkdir()
        add_version(model_dir, args.model, 1)
        registry = ModelRegistry.load(Settings(model_dir=model_dir, default_model=args.model, model_poll_s=0))
        batch = np.random.default_rng(0).random((32, 28, 28), dtype=np.float32)
        for _ in range(50):
            registry.get().predict(batch)
        gc.collect()
        base = metrics.resident_bytes()
        print(f"one {args.model} version loaded and serving: {base / 2**20:.1f} MB resident")
        peak, cpu = base, []
        for version in range(2, args.reloads + 2):
            add_version(model_dir, args.model, version)
            started = time.process_time()
            registry.refresh()
            cpu.append(time.process_time() - started)
            for _ in range(20):
                registry.get().predict(batch)
            gc.collect()
            rss = metrics.resident_bytes()
            peak = max(peak, rss)
            if version in (2, 3, 6, 11) or version % 10 == 1:
                print(
                    f"after reload {version - 1:3d} (serving v{registry.get().version}): {rss / 2**20:.1f} MB"
                )
        registry.close()
    print(
        f"{args.reloads} reloads: {base / 2**20:.1f} MB resident before, at most {peak / 2**20:.1f} MB "
        f"(+{(peak - base) / 2**20:.1f} MB); refresh CPU median {1000 * float(np.median(cpu)):.0f} ms"
    )


if __name__ == "__main__":
    main()
