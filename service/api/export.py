"""GET /api/feedback/export: every labelled example, for retraining, as NPZ or CSV."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator

import numpy as np
from flask import Blueprint, Response, request, stream_with_context

from service.api import errors
from service.api.handler import current
from service.api.records import iso
from service.errors import BadInput
from service.store.base import PredictionRecord
from service.tensors import PIXELS

bp = Blueprint("export", __name__)
errors.register_own(bp)

FORMATS = ("npz", "csv")


@bp.get("/api/feedback/export")
def export() -> Response:
    """Every labelled example, for retraining: `format=npz` (images, labels, ...) or `format=csv`."""
    fmt = request.args.get("format", "npz")
    store = current().store
    if fmt == "csv":
        return Response(
            stream_with_context(_csv_rows(store.labelled())),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=mnist-feedback.csv"},
        )
    if fmt == "npz":
        return _npz(store.labelled())
    raise BadInput(f"format must be 'npz' or 'csv', got {fmt!r}")


def _csv_rows(records: Iterator[PredictionRecord]) -> Iterator[str]:
    """Kaggle's MNIST layout (label, pixel0..pixel783) plus what the service knows about the prediction."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["id", "created", "model", "version", "predicted", "label", *(f"pixel{i}" for i in range(PIXELS))]
    )
    for rec in records:
        pixels = np.frombuffer(rec.pixels, dtype=np.uint8).tolist()
        writer.writerow([rec.id, iso(rec.created), rec.model, rec.version, rec.digit, rec.label, *pixels])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _npz(records: Iterator[PredictionRecord]) -> Response:
    """NumPy arrays like load_mnist's: images uint8 [N, 28, 28], labels uint8 [N], plus predictions."""
    images: list[bytes] = []
    labels: list[int] = []
    predicted: list[int] = []
    ids: list[str] = []
    model_names: list[str] = []
    for rec in records:
        images.append(rec.pixels)
        labels.append(rec.label if rec.label is not None else -1)
        predicted.append(rec.digit)
        ids.append(str(rec.id))
        model_names.append(rec.model)
    n = len(images)
    # A temporary file rather than memory: exports grow with every label given.
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 (closed by the response stream)
    np.savez_compressed(
        spool,
        images=np.frombuffer(b"".join(images), dtype=np.uint8).reshape(n, 28, 28),
        labels=np.array(labels, dtype=np.uint8),
        predicted=np.array(predicted, dtype=np.uint8),
        ids=np.array(ids, dtype="U36"),
        models=np.array(model_names, dtype="U32"),
    )
    size = spool.tell()
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            while chunk := spool.read(65536):
                yield chunk

    return Response(
        chunks(),
        mimetype="application/octet-stream",
        headers={
            "Content-Disposition": "attachment; filename=mnist-feedback.npz",
            "Content-Length": str(size),
        },
    )
