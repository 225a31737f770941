"""The shipped Grafana dashboard as the tests see it: its panels, PromQL expressions and metric names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "charts" / "mnist-service" / "dashboards" / "mnist-service.json"

# Labelled metrics that have no sample until something fails (no store error happens in a healthy test run).
ONLY_AFTER_FAILURES = {"mnist_store_errors_total", "mnist_model_load_failures_total"}
# Labelled metrics that have samples only on a server with a shadow version set (MNIST_MODEL_SHADOW);
# tests/test_prometheus.py runs one.
ONLY_WITH_SHADOW = {"mnist_shadow_predictions_total", "mnist_shadow_feedback_total"}

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(?!\s*\()")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of one panel."""

    panel: str
    ref: str
    expr: str


def load() -> dict:
    """The dashboard JSON."""
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel that draws data (rows flattened, row headers skipped)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: dict) -> list[Query]:
    """Every PromQL expression, labelled with its panel title."""
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def concrete(expr: str, rate_interval: str = "1m", range_: str = "5m") -> str:
    """The expression with Grafana's variables replaced so that Prometheus itself can evaluate it:
    multi-value selectors match everything, the low-confidence threshold takes its default."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$low_confidence", "0.8")
        .replace("$job", ".*")
        .replace("$model", ".*")
        .replace("$endpoint", ".*")
    )


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


# --- a picture of the dashboard, drawn from real query results (Grafana itself cannot run here) ---

_UNITS = {
    "percentunit": (100.0, "%"),
    "s": (1000.0, " ms"),
    "bytes": (1 / 2**20, " MiB"),
    "reqps": (1.0, " req/s"),
    "ops": (1.0, "/s"),
}
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _legend(template: str, labels: dict[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def _scale(unit: str) -> tuple[float, str]:
    return _UNITS.get(unit, (1.0, ""))


def render(board: dict, results: dict[tuple[str, str], list[dict]], path: Path) -> None:
    """Lay the panels out on Grafana's 24-column grid and draw each from its query_range results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    unit_w, unit_h = 0.75, 0.42  # inches per grid column / row unit
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 1.0), facecolor="#111217")
    top = 1 - 0.9 / (rows * unit_h + 1.0)
    fig.text(
        0.01,
        top + 0.4 / (rows * unit_h + 1.0),
        f"{board['title']}: a rendering of the shipped Grafana dashboard's panels from real Prometheus query "
        "results (tests/test_prometheus.py), not a Grafana screenshot",
        color="#d8d9da",
        fontsize=13,
        weight="bold",
    )

    def box(pos: dict, axes: bool = False) -> list[float]:
        pad = 0.004
        # Panels with axes leave room inside their cell for the tick labels, as Grafana's panels do.
        left, bottom = (0.032, 0.012) if axes else (0.0, 0.0)
        return [
            pos["x"] / 24 + pad + left,
            top * (1 - (pos["y"] + pos["h"]) / rows) + pad + bottom,
            pos["w"] / 24 - 2 * pad - left,
            top * pos["h"] / rows - 2 * pad - 0.012 - bottom,
        ]

    for panel in board["panels"]:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            x, y, _, _ = box(pos)
            fig.text(x, y + 0.004, panel["title"], color="#d8d9da", fontsize=12, weight="bold")
            continue
        ax = fig.add_axes(box(pos, panel["type"] in ("timeseries", "heatmap")), facecolor="#181b1f")
        ax.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        factor, suffix = _scale(unit)
        series = [
            (target, s)
            for target in panel["targets"]
            for s in results.get((panel["title"], target["refId"]), [])
        ]
        if panel["type"] == "stat":
            _draw_stat(ax, series, factor, suffix)
        elif panel["type"] == "table":
            _draw_table(ax, series)
        elif panel["type"] == "heatmap":
            _draw_heatmap(ax, series)
        else:
            _draw_timeseries(ax, panel, series, factor, suffix)
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)


def _values(s: dict) -> tuple[list[float], list[float]]:
    times, values = [], []
    for t, v in s["values"]:
        times.append(float(t))
        values.append(float(v))
    return times, values


def _draw_stat(ax, series, factor: float, suffix: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    last = [v for _, s in series for v in _values(s)[1][-1:] if v == v]  # NaN != NaN
    text = f"{last[0] * factor:.3g}{suffix}" if last else "No data"
    ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=20, color="#73bf69", transform=ax.transAxes)
    if series:
        t, v = _values(series[0][1])
        ax.fill_between(t, [x * factor if x == x else 0 for x in v], color="#73bf69", alpha=0.15)


def _draw_table(ax, series) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    header = ["model", "version", "accuracy"]
    lines = [header] + [[s["metric"].get(k, "") for k in header] for _, s in series]
    for i, line in enumerate(lines):
        for j, cell in enumerate(line):
            weight = "bold" if i == 0 else "normal"
            ax.text(0.03 + j * 0.32, 0.85 - i * 0.15, cell, color="#d8d9da", fontsize=9, weight=weight)


def _draw_heatmap(ax, series) -> None:
    import numpy as np

    buckets = sorted(
        ((float(s["metric"]["le"]), s) for _, s in series if "le" in s["metric"]), key=lambda b: b[0]
    )
    if not buckets:
        ax.text(0.5, 0.5, "No data", ha="center", color="#8e8e8e", transform=ax.transAxes)
        return
    times = _values(buckets[0][1])[0]
    cumulative = np.array([[v if v == v else 0.0 for v in _values(s)[1]] for _, s in buckets])
    counts = np.diff(np.vstack([np.zeros(cumulative.shape[1]), cumulative]), axis=0).clip(min=0)
    ax.imshow(counts, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    labels = ["≤" + (f"{le:g}" if le != float("inf") else "+Inf") for le, _ in buckets]
    ax.set_yticks(range(len(labels)), labels)
    ticks = np.linspace(0, len(times) - 1, 4).astype(int)
    ax.set_xticks(ticks, [f"{times[i] - times[0]:.0f}s" for i in ticks])


def _draw_timeseries(ax, panel: dict, series, factor: float, suffix: str) -> None:
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    if not series:
        ax.text(0.5, 0.5, "No data", ha="center", color="#8e8e8e", transform=ax.transAxes)
        return
    t0 = min(_values(s)[0][0] for _, s in series if s["values"])
    base = None
    for target, s in series:
        t, v = _values(s)
        x = [ti - t0 for ti in t]
        y = [vi * factor if vi == vi else float("nan") for vi in v]
        label = _legend(target.get("legendFormat", ""), s["metric"])
        if stacked:
            import numpy as np

            lower = np.zeros(len(y)) if base is None or len(base) != len(y) else base
            upper = lower + np.nan_to_num(y)
            ax.fill_between(x, lower, upper, alpha=0.6, label=label, step="mid")
            base = upper
        else:
            ax.plot(x, y, lw=1.4, label=label)
    ax.set_ylabel(suffix.strip(), color="#8e8e8e", fontsize=7)
    ax.set_xlabel("seconds", color="#8e8e8e", fontsize=7)
    ax.grid(color="#2c3235", lw=0.5)
    ax.legend(fontsize=6, ncol=4, loc="upper left", framealpha=0.3, labelcolor="#d8d9da", facecolor="#181b1f")
