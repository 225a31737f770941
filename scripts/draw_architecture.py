"""Draw docs/img/architecture.png, the picture in README.md: what a request and its record pass through.

A script rather than a hand-made image so the picture changes with the code in the same commit:
`.venv/bin/python scripts/draw_architecture.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "architecture.png"
REQUEST = "#1f5fa8"  # the request path
RECORD = "#b5561b"  # the record path
PLAIN = "#555555"


def box(ax: Axes, x: float, y: float, w: float, h: float, title: str, body: str = "", *, fill: str) -> None:
    """A rounded box with a bold title line and smaller detail lines under it."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=fill, ec="#333333", lw=1.1
        )
    )
    ax.text(x + w / 2, y + h - 0.2, title, ha="center", va="top", fontsize=10.5, weight="bold")
    if body:
        ax.text(x + w / 2, y + h - 0.52, body, ha="center", va="top", fontsize=8.6, linespacing=1.35)


Point = tuple[float, float]


def arrow(ax: Axes, start: Point, end: Point, color: str, label: str = "") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6})
    if label:
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(mid[0], mid[1] + 0.12, label, ha="center", va="bottom", fontsize=8, color=color)


def draw() -> None:
    fig, ax = plt.subplots(figsize=(13, 7.2))
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 9)
    ax.axis("off")

    box(
        ax, 0.2, 5.6, 2.6, 2.4, "Clients",
        "web page (/, /history)\ncurl, own JSON API\nTF Serving REST clients\nKServe / Triton (v2)\n"
        "Prometheus scraper",
        fill="#eef3fb",
    )  # fmt: skip

    # One gunicorn worker; the others are copies of it.
    ax.add_patch(
        FancyBboxPatch(
            (3.4, 0.9), 9.0, 7.7, boxstyle="round,pad=0.02,rounding_size=0.2", fc="#fafafa", ec="#888888",
            lw=1.0, ls="--",
        )
    )  # fmt: skip
    ax.text(
        7.9, 8.45, "mnist serve: gunicorn, N workers x M threads (each worker a copy of this box)",
        ha="center", va="top", fontsize=9.5, color=PLAIN,
    )  # fmt: skip
    box(
        ax, 3.7, 6.0, 4.0, 2.0, "Protocol endpoints (Flask)",
        "own API /predict, /api/...\nTF Serving /v1/models/...\nOpen Inference v2 /v2/...\n"
        "ops /healthz /readyz /metrics",
        fill="#dde8f7",
    )  # fmt: skip
    box(
        ax, 8.2, 6.0, 3.9, 2.0, "Decode to [n, 28, 28] float32",
        "images: preprocess.py\n(MNIST-style crop, scale, centre)\ntensors: shape and range checks",
        fill="#dde8f7",
    )  # fmt: skip
    box(
        ax, 8.2, 3.3, 3.9, 2.0, "Micro-batcher per model",
        "queues images of concurrent requests\nruns one batch (<= MAX_BATCH_SIZE)",
        fill="#dde8f7",
    )  # fmt: skip
    box(
        ax, 4.5, 3.3, 3.2, 2.0, "LiteRT interpreters",
        "softmax and cnn\nmodels/<name>/<version>/\nmodel.tflite (from TensorFlow)",
        fill="#dde8f7",
    )  # fmt: skip
    box(
        ax, 3.7, 1.3, 8.4, 1.3, "Write queue (bounded, background thread, batched writes)",
        "each prediction's record: id, model, digit, probabilities, 28x28 input, upload",
        fill="#fbe9dd",
    )  # fmt: skip

    box(ax, 13.0, 4.4, 2.8, 1.7, "SQLite", "laptop default (WAL)", fill="#fbe9dd")
    box(
        ax, 13.0, 1.3, 2.8, 2.3, "Apache Cassandra",
        "production store\ndisk spool while it is down,\nreplayed when it is back",
        fill="#fbe9dd",
    )  # fmt: skip
    box(ax, 13.0, 6.6, 2.8, 1.7, "Prometheus", "GET /metrics, merged\nacross workers", fill="#eeeeee")

    arrow(ax, (2.8, 7.0), (3.7, 7.0), REQUEST, "HTTP")
    arrow(ax, (7.7, 7.0), (8.2, 7.0), REQUEST)
    arrow(ax, (10.15, 6.0), (10.15, 5.3), REQUEST)
    arrow(ax, (8.2, 4.3), (7.7, 4.3), REQUEST)
    arrow(ax, (6.1, 5.3), (6.1, 6.0), REQUEST)
    ax.text(6.2, 5.55, "probabilities", fontsize=8, color=REQUEST, ha="left")
    arrow(ax, (4.05, 6.0), (4.05, 2.6), RECORD)
    ax.text(4.12, 4.3, "record", fontsize=8, color=RECORD, ha="left", rotation=90, va="center")
    arrow(ax, (12.1, 1.95), (13.0, 2.45), RECORD)
    arrow(ax, (12.1, 1.95), (13.0, 5.0), RECORD)
    arrow(ax, (12.4, 7.45), (13.0, 7.45), PLAIN)

    ax.text(
        0.2, 0.35,
        "blue: a request, answered as soon as its batch is done    "
        "orange: its record, written behind the answer    "
        "Kubernetes: charts/mnist-service (Deployment, Cassandra StatefulSet, keyspace-init Job)",
        fontsize=8.4, color=PLAIN,
    )  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    draw()
