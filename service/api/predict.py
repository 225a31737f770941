"""The own API: predict from uploads or pixel arrays, browse the history, give and export feedback."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request, stream_with_context

from service import metrics
from service.errors import BadImage, BadInput, NotFound
from service.preprocess import preprocess
from service.state import ServiceState, Upload, current, request_info
from service.store.base import PredictionRecord
from service.tensors import PIXELS, as_array, from_pixels, is_image_shape, to_batch

bp = Blueprint("predict", __name__)

MAX_IMAGES_PER_REQUEST = 256
MAX_PAGE = 500
DEFAULT_PAGE = 50
# A record written by another worker's write-behind queue reaches the store within milliseconds; a read or
# feedback for a brand-new id waits up to this long for it before answering 404.
PENDING_WRITE_GRACE_S = 1.0
_IMAGE_FIELDS = ("image", "file")
_TRUE = {"1", "true", "yes", "on"}


# --- POST /predict ---


@bp.post("/predict")
def predict() -> Response:
    """One or several images (multipart, JSON base64, JSON pixels or a raw image body) -> digits."""
    state = current()
    with state.models.arrivals.expect():  # tells the batcher this request's images are coming
        images, uploads, many, model = _read_inputs(state)
    model = request.args.get("model") or model
    g.model = model or state.models.default
    predictions, latency_ms = state.predict(images, request_info("predict"), model, uploads=uploads)
    include_input = request.args.get("include_input", "").lower() in _TRUE
    results = [p.as_json(latency_ms, include_input) for p in predictions]
    g.model = predictions[0].model.name
    g.digit = predictions[0].digit if len(predictions) == 1 else None
    return jsonify(results if many else results[0])


def _read_inputs(state: ServiceState) -> tuple[np.ndarray, list[Upload | None], bool, str | None]:
    """The images as float32 [n, 28, 28], their original bytes, whether a list was sent, and model."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        files = [f for name in _IMAGE_FIELDS for f in request.files.getlist(name)]
        if not files:
            raise BadInput("no image: send the picture in a multipart field named 'image'")
        if len(files) > MAX_IMAGES_PER_REQUEST:
            raise BadInput(f"at most {MAX_IMAGES_PER_REQUEST} images per request")
        decoded = [decode_upload(state, f.read()) for f in files]
        images = np.stack([array for array, _ in decoded])
        return images, [upload for _, upload in decoded], len(files) > 1, request.form.get("model")
    body = request.get_data(cache=False)
    if not body:
        raise BadInput(
            'empty request: send an image as multipart field \'image\', JSON {"image": "<base64>"} '
            'or {"pixels": [[...28x28...]]}'
        )
    # JSON also without its content type: `curl -d '{...}'` sends application/x-www-form-urlencoded.
    if mimetype == "application/json" or body.lstrip()[:1] in (b"{", b"["):
        return _read_json(state, body)
    # Anything else is the image itself (curl --data-binary @digit.png -H 'Content-Type: image/png').
    array, upload = decode_upload(state, body)
    return array[np.newaxis], [upload], False, None


def _read_json(state: ServiceState, body: bytes) -> tuple[np.ndarray, list[Upload | None], bool, str | None]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    many = isinstance(doc, list)
    items = doc if many else [doc]
    if not items:
        raise BadInput("an empty list: send at least one image")
    if len(items) > MAX_IMAGES_PER_REQUEST:
        raise BadInput(f"at most {MAX_IMAGES_PER_REQUEST} images per request")
    arrays: list[np.ndarray] = []
    uploads: list[Upload | None] = []
    model: str | None = None
    for index, item in enumerate(items):
        where = f"item {index}" if many else "body"
        if not isinstance(item, dict):
            raise BadInput(f'{where}: expected an object like {{"image": "<base64>"}} or {{"pixels": [...]}}')
        model = model or _model_field(item, where)
        if "image" in item or "images" in item:
            value = item.get("image", item.get("images"))
            many = many or isinstance(value, list)
            texts = value if isinstance(value, list) else [value]
            if len(texts) > MAX_IMAGES_PER_REQUEST:
                raise BadInput(f"at most {MAX_IMAGES_PER_REQUEST} images per request")
            for n, text in enumerate(texts):
                array, upload = decode_upload(state, decode_base64(text, f"{where}, image {n}"))
                uploads.append(upload)
                arrays.append(array[np.newaxis])
        elif "pixels" in item:
            what = f"{where}: pixels"
            array = as_array(item["pixels"], what=what)
            single = is_image_shape(array.shape)
            batch = to_batch(array[np.newaxis] if single else array, what=what)
            many = many or not single
            uploads.extend([None] * len(batch))
            arrays.append(batch)
        else:
            raise BadInput(f'{where}: expected a field "image" (base64) or "pixels" (28x28 numbers)')
    if not arrays:
        raise BadInput("no images given")
    images = np.concatenate(arrays)
    if len(images) > MAX_IMAGES_PER_REQUEST:
        raise BadInput(f"at most {MAX_IMAGES_PER_REQUEST} images per request")
    return images, uploads, many, model


def _model_field(item: dict[str, Any], where: str) -> str | None:
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        raise BadInput(f"{where}: 'model' must be a model name (text)")
    return model


def decode_base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadInput(f"{where}: expected base64 text")
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{where}: not valid base64") from None
    if not data:
        raise BadInput(f"{where}: the image is empty")
    return data


def decode_upload(state: ServiceState, data: bytes) -> tuple[np.ndarray, Upload]:
    """Image file bytes -> the 28x28 model input, and the upload with its detected type (for the record)."""
    if not data:
        raise BadInput("the uploaded image is empty")
    settings = state.settings
    pre = preprocess(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    return pre.array, Upload(data, pre.mime)


# --- models ---


@bp.get("/api/models")
def models() -> Response:
    """The served models with their version and test-set accuracy."""
    registry = current().models
    return jsonify(
        models=[
            {**m.describe(), "default": name == registry.default}
            for name, m in sorted(registry.models.items())
        ],
        default=registry.default,
    )


# --- history ---


@bp.get("/api/predictions")
def list_predictions() -> Response:
    """Newest first; `next_before` is the cursor for the next (older) page, null on the last page."""
    state = current()
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
    digit = _int_arg("digit", None, 0, 9)
    model = request.args.get("model") or None
    before, before_id = _cursor(request.args.get("before"))
    records = state.store.list(limit=limit, before=before, digit=digit, model=model, before_id=before_id)
    next_before = _make_cursor(records[-1]) if len(records) == limit else None
    return jsonify(predictions=[_summary(r) for r in records], next_before=next_before)


@bp.get("/api/predictions/<record_id>")
def get_prediction(record_id: str) -> Response:
    """One record with the 28x28 input the model saw and, when kept, the original image (base64)."""
    rec = _find(current(), _uuid(record_id))
    body = _summary(rec)
    body.update(
        client=rec.client,
        request_id=rec.request_id,
        image=base64.b64encode(rec.image).decode() if rec.image else None,
        image_type=rec.image_type,
        extra=rec.extra,
    )
    return jsonify(body)


@bp.get("/api/predictions/<record_id>/image")
def get_image(record_id: str) -> Response:
    """The original upload, as sent (404 when it was not kept)."""
    rec = _find(current(), _uuid(record_id))
    if not rec.image:
        raise NotFound(
            f"prediction {record_id} has no stored image (only uploads up to the size cap are kept)"
        )
    return Response(rec.image, mimetype=rec.image_type or "application/octet-stream")


@bp.post("/api/predictions/<record_id>/feedback")
def feedback(record_id: str) -> Response:
    """Store the true digit for a prediction: {"label": 0..9}."""
    state = current()
    rid = _uuid(record_id)
    label = _label(request.get_json(silent=True))
    rec = _find(state, rid)
    # A record still in this worker's write queue is not in the store yet: wait until it is, then label it.
    if not state.store.set_label(rid, label) and not (
        state.writes.await_written(rid, PENDING_WRITE_GRACE_S) and state.store.set_label(rid, label)
    ):
        raise NotFound(f"prediction {rid} is not in the store yet; try again in a moment")
    metrics.observe_feedback(rec.model, rec.digit, label)
    g.model, g.digit = rec.model, rec.digit
    return jsonify(id=str(rid), label=label, digit=rec.digit, agree=label == rec.digit)


def _label(doc: Any) -> int:
    if not isinstance(doc, dict) or "label" not in doc:
        raise BadInput('send JSON {"label": <the true digit 0..9>}')
    label = doc["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise BadInput(f"label must be an integer 0..9, got {json.dumps(label)}")
    return label


# --- export ---


@bp.get("/api/feedback/export")
def export() -> Response:
    """Every labelled example, for retraining: `format=npz` (images, labels, ...) or `format=csv`."""
    fmt = request.args.get("format", "npz").lower()
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
        writer.writerow([rec.id, _iso(rec.created), rec.model, rec.version, rec.digit, rec.label, *pixels])
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


# --- helpers ---


def _summary(rec: PredictionRecord) -> dict[str, Any]:
    return {
        "id": str(rec.id),
        "created": _iso(rec.created),
        "model": rec.model,
        "version": rec.version,
        "digit": rec.digit,
        "confidence": round(rec.confidence, 6),
        "probabilities": [round(p, 6) for p in rec.probabilities],
        "latency_ms": round(rec.latency_ms, 3),
        "label": rec.label,
        "pixels": np.round(from_pixels(rec.pixels), 3).tolist(),
        "image_url": f"/api/predictions/{rec.id}/image" if rec.image else None,
    }


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _make_cursor(rec: PredictionRecord) -> str:
    return f"{_iso(rec.created)},{rec.id}"


def _cursor(value: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """`before` is a cursor from `next_before` ("<time>,<id>") or just a time (ISO 8601)."""
    if not value:
        return None, None
    when, _, rid = value.partition(",")
    try:
        before = datetime.fromisoformat(when.strip().replace(" ", "+"))
    except ValueError:
        raise BadInput(f"before must be an ISO 8601 time or a next_before cursor, got {value!r}") from None
    if before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    return before, _uuid(rid) if rid else None


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be an integer {low}..{high}, got {raw!r}") from None
    if not low <= value <= high:
        raise BadInput(f"{name} must be {low}..{high}, got {value}")
    return value


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"no prediction with id {text!r} (ids are UUIDs)") from None


def _find(state: ServiceState, rid: uuid.UUID) -> PredictionRecord:
    """The record, also when it is still on its way to the store (in this worker's queue or another's)."""
    rec = state.writes.find(rid, PENDING_WRITE_GRACE_S)
    if rec is None:
        raise NotFound(f"no prediction with id {rid}")
    return rec
