"""The history: list recorded predictions, read one (and its original image), give feedback on one."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, request

from service.api import errors
from service.api.handler import current, json_response
from service.codecs.body import read_json
from service.errors import BadInput, NotFound
from service.store.base import PredictionRecord
from service.tensors import from_pixels
from service.types.records import CURSOR, FeedbackAnswer, Page, Record, RecordSummary

bp = Blueprint("records", __name__)
errors.register_own(bp)

MAX_PAGE = 500
DEFAULT_PAGE = 50
_CURSOR = re.compile(CURSOR)
_TRUE = {"1", "true", "yes", "on"}


@bp.get("/api/predictions")
def list_predictions() -> Response:
    """Newest first; `next_before` is the cursor for the next (older) page, null on the last page."""
    state = current()
    limit = _int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE) or DEFAULT_PAGE
    digit = _int_arg("digit", None, 0, 9)
    model = request.args.get("model") or None
    before, before_id = _cursor(request.args.get("before"))
    shadows = request.args.get("shadow", "").lower() in _TRUE
    records = state.store.list(
        limit=limit, before=before, digit=digit, model=model, before_id=before_id, shadows=shadows
    )
    next_before = _make_cursor(records[-1]) if len(records) == limit else None
    page = Page(predictions=[RecordSummary(**_summary(r)) for r in records], next_before=next_before)
    return json_response(page.model_dump_json().encode())


@bp.get("/api/predictions/<record_id>")
def get_prediction(record_id: str) -> Response:
    """One record with the 28x28 input the model saw and, when kept, the original image (base64)."""
    rec = current().find(_uuid(record_id))
    detail = Record(
        **_summary(rec),
        client=rec.client,
        request_id=rec.request_id,
        image=base64.b64encode(rec.image).decode() if rec.image else None,
        image_type=rec.image_type,
        extra=rec.extra,
    )
    return json_response(detail.model_dump_json().encode())


@bp.get("/api/predictions/<record_id>/image")
def get_image(record_id: str) -> Response:
    """The original upload, as sent (404 when it was not kept)."""
    rec = current().find(_uuid(record_id))
    if not rec.image:
        raise NotFound(
            f"prediction {record_id} has no stored image (only uploads up to the size cap are kept)"
        )
    return Response(rec.image, mimetype=rec.image_type or "application/octet-stream")


@bp.post("/api/predictions/<record_id>/feedback")
def feedback(record_id: str) -> Response:
    """Store the true digit for a prediction: {"label": 0..9}."""
    rid = _uuid(record_id)
    label = _label(request.get_data(cache=False))
    rec = current().label(rid, label)
    g.model, g.digit = rec.model, rec.digit
    answer = FeedbackAnswer(id=str(rid), label=label, digit=rec.digit, agree=label == rec.digit)
    return json_response(answer.model_dump_json().encode())


def _label(body: bytes) -> int:
    hint = 'send JSON {"label": <the true digit 0..9>}'
    try:
        doc = read_json(body, what="the body", empty=hint)
    except BadInput:
        raise BadInput(hint) from None
    if not isinstance(doc, dict) or "label" not in doc:
        raise BadInput(hint)
    label = doc["label"]
    # JSON Schema's "integer" is any number without a fraction, so 5.0 is the digit 5.
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise BadInput(f"label must be an integer 0..9, got {json.dumps(label)}")
    return label


def _summary(rec: PredictionRecord) -> dict[str, Any]:
    return {
        "id": str(rec.id),
        "created": iso(rec.created),
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


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _make_cursor(rec: PredictionRecord) -> str:
    return f"{iso(rec.created)},{rec.id}"


def _cursor(value: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """`before` is a cursor from `next_before` ("<time>,<id>") or just a time."""
    if not value:
        return None, None
    # A `+` in a query string arrives as a space: "...T10:00:00 01:00" means +01:00 (only after a time: in
    # "2024-05-01 13:12,<id>" the space separates the date from the time).
    text = re.sub(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?) (\d{2}:\d{2})(,|$)", r"\1+\2\3", value.strip())
    found = _CURSOR.match(text)
    if found is None:
        raise BadInput(
            f"before must be a time like 2024-05-01T12:00:00Z or a next_before cursor, got {value!r}"
        )
    part = found.groupdict()
    zone = part["tz"] or "Z"
    offset = (
        timedelta(0)
        if zone in "Zz"
        else int(zone[0] + "1") * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    )
    start = datetime(
        int(part["y"]),
        int(part["m"]),
        1,
        int(part["H"] or 0),
        int(part["M"] or 0),
        int(part["S"] or 0),
        int((part["f"] or "0")[:6].ljust(6, "0")),
        tzinfo=timezone(offset),
    )
    return start + timedelta(days=int(part["d"]) - 1), uuid.UUID(part["id"]) if part["id"] else None


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
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
