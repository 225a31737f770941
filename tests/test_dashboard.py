"""The Grafana dashboard shipped with the chart: valid PromQL (checked by Prometheus's own promtool) that
names only metrics the service defines and exports, covering every signal an operator needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from tests import dashboard
from tests.conftest import require_binary

# Suffixes each metric type adds to its family name in the exposition format.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}

# What the issue asks the dashboard to show, as (metric, words that must appear in the same expression).
REQUIRED_SIGNALS = [
    ("mnist_http_requests_total", "by (status)"),
    ("mnist_http_request_duration_seconds_bucket", "histogram_quantile(0.5,"),
    ("mnist_http_request_duration_seconds_bucket", "histogram_quantile(0.95,"),
    ("mnist_http_request_duration_seconds_bucket", "histogram_quantile(0.99,"),
    ("mnist_predictions_total", "by (digit)"),
    ("mnist_prediction_confidence_bucket", 'format="heatmap"'),
    ("mnist_prediction_confidence_bucket", 'le="$low_confidence"'),
    ("mnist_feedback_total", 'agreement="disagree"'),
    ("mnist_batch_size_sum", ""),
    ("mnist_write_queue_depth", ""),
    ("mnist_spool_depth", ""),
    ("mnist_store_errors_total", ""),
    ("mnist_process_resident_memory_bytes", ""),
    # Issue 13: versions side by side, primary/shadow agreement, field accuracy per version.
    ("mnist_predictions_total", "by (model, version)"),
    ("mnist_shadow_predictions_total", 'agreement="agree"'),
    ("mnist_feedback_total", "by (model, version)"),
    ("mnist_shadow_feedback_total", 'agreement="agree"'),
    # Issue 14: gRPC calls apart from HTTP requests.
    ("mnist_grpc_requests_total", "by (rpc, code)"),
    ("mnist_grpc_request_duration_seconds_bucket", "histogram_quantile(0.99,"),
]


def defined_sample_names() -> set[str]:
    """Every sample name service/metrics.py can export, derived from the metric definitions themselves."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


@pytest.fixture(scope="module")
def board() -> dict:
    return dashboard.load()


def test_dashboard_has_panels_each_with_a_query(board: dict) -> None:
    drawn = list(dashboard.panels(board))
    assert len(drawn) >= 10
    for panel in drawn:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} does not say what it shows"


def test_panels_fit_the_grid_without_overlapping(board: dict) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_panel_ids_and_dashboard_uid_are_stable(board: dict) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "mnist-service"


def test_every_expression_is_valid_promql(board: dict, tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule: Prometheus's own parser, not a regex."""
    promtool = require_binary("promtool", "apt-get install prometheus (scripts/install-system-deps.sh)")
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": dashboard.concrete(q.expr)}
        for i, q in enumerate(dashboard.queries(board))
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    command = [promtool, "check", "rules", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_every_metric_the_dashboard_names_is_defined_by_the_service(board: dict) -> None:
    defined = defined_sample_names()
    for query in dashboard.queries(board):
        names = dashboard.metric_names(query.expr)
        assert names, f"{query.panel}: no metric found in {query.expr}"
        unknown = names - defined
        assert not unknown, f"{query.panel} ({query.ref}) names metrics the service lacks: {unknown}"


def test_dashboard_shows_every_signal_the_operators_need(board: dict) -> None:
    exprs = []
    for panel in dashboard.panels(board):
        for target in panel["targets"]:
            fmt = f' format="{target["format"]}"' if "format" in target else ""
            exprs.append(target["expr"] + fmt)
    for metric, words in REQUIRED_SIGNALS:
        assert any(metric in e and words in e for e in exprs), f"no panel shows {metric} with {words!r}"


@pytest.mark.integration
def test_running_service_exports_every_metric_the_dashboard_names(board: dict, server) -> None:
    """After a prediction per model over HTTP and gRPC and a feedback, the real multi-worker server's
    /metrics has every metric the dashboard names (the shadow ones need a shadow: test_prometheus.py)."""
    models = requests.get(f"{server.url}/api/models", timeout=10).json()["models"]
    digit = _digit_png()
    for model in models:
        name = model["name"] if isinstance(model, dict) else model
        files = {"image": ("d.png", digit, "image/png")}
        answer = requests.post(f"{server.url}/predict", files=files, data={"model": name}, timeout=30)
        assert answer.status_code == 200, answer.text
        pid = answer.json()["id"]
        sent = requests.post(f"{server.url}/api/predictions/{pid}/feedback", json={"label": 3}, timeout=10)
        assert sent.status_code in (200, 201), sent.text
    _grpc_infer(server.grpc_target)
    exported = {
        sample.name
        for family in text_string_to_metric_families(requests.get(f"{server.url}/metrics", timeout=10).text)
        for sample in family.samples
    }
    wanted = set().union(*(dashboard.metric_names(q.expr) for q in dashboard.queries(board)))
    assert not (wanted - dashboard.ONLY_AFTER_FAILURES - dashboard.ONLY_WITH_SHADOW) - exported


def _grpc_infer(target: str) -> None:
    """One ModelInfer call over gRPC (a blank image is fine: the metrics count the call)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=target)
    try:
        image = grpcclient.InferInput("image", [1, 28, 28], "FP32")
        image.set_data_from_numpy(np.zeros((1, 28, 28), dtype=np.float32))
        client.infer("cnn", [image], client_timeout=30)
    finally:
        client.close()


def _digit_png() -> bytes:
    """A drawn 3: a real PNG made with Pillow, white strokes on black like MNIST."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(image)
    draw.arc((30, 14, 82, 56), 200, 90, fill=255, width=9)
    draw.arc((30, 52, 82, 98), 270, 160, fill=255, width=9)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
