"""The `Store` contract: every backend (SQLite, Cassandra) must pass this same suite.

Values are chosen to be exact in every backend's types: timestamps in whole milliseconds (Cassandra's
`timestamp` precision) and probabilities that are exact float32 values. Paging uses the (created, id)
cursor of the last record of the previous page, as the API does: `list(before=..., before_id=...)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.store.base import PredictionRecord, Store
from service.store.sqlite import SqliteStore
from tests.conftest import missing

T0 = datetime(2026, 3, 14, 15, 9, 26, 535_000, tzinfo=UTC)
PROBABILITIES = (0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625, 0.001953125, 0.001953125)


def make_record(
    created: datetime = T0, *, digit: int = 0, model: str = "cnn", **fields: object
) -> PredictionRecord:
    """A plausible record; `fields` override any attribute."""
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "created": created,
        "model": model,
        "version": "1",
        "digit": digit,
        "confidence": 0.5,
        "probabilities": PROBABILITIES,
        "pixels": bytes(range(256)) * 3 + bytes(16),
        "latency_ms": 1.25,
    }
    values.update(fields)
    return PredictionRecord(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "cassandra"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend."""
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "predictions.db")
        yield sqlite
        sqlite.close()
        return
    try:
        cassandra: Store = request.getfixturevalue("cassandra_store")
    except pytest.FixtureLookupError:
        missing(
            "the cassandra_store fixture", "tests/fixtures/cassandra.py provides it (Cassandra work, issue 4)"
        )
    yield cassandra


def page_through(store: Store, page: int, **filters: object) -> list[PredictionRecord]:
    """Every record, newest first, fetched `page` at a time with the (created, id) cursor."""
    seen: list[PredictionRecord] = []
    while True:
        cursor = {"before": seen[-1].created, "before_id": seen[-1].id} if seen else {}
        batch = store.list(limit=page, **cursor, **filters)  # type: ignore[arg-type]
        assert len(batch) <= page
        if not batch:
            return seen
        seen += batch


def test_a_record_comes_back_with_every_field(store: Store) -> None:
    rec = make_record(
        digit=7,
        model="softmax",
        version="3",
        image=b"\x89PNG\r\n\x1a\n" + bytes(1000),
        image_type="image/png",
        client="203.0.113.7",
        request_id="req-42",
        extra={"protocol": "v2", "steps": 4},
    )
    store.record(rec)
    assert store.get(rec.id) == rec


def test_optional_fields_may_be_absent(store: Store) -> None:
    rec = make_record()
    store.record(rec)
    got = store.get(rec.id)
    assert got == rec
    assert got is not None and got.image is None and got.label is None and got.client is None


def test_an_unknown_id_is_none(store: Store) -> None:
    store.record(make_record())
    assert store.get(uuid.uuid4()) is None


def test_recording_the_same_id_twice_is_one_row(store: Store) -> None:
    rec = make_record(digit=1)
    store.record(rec)
    again = make_record(id=rec.id, digit=2, confidence=0.75)
    store.record(again)
    assert store.get(rec.id) == again
    assert [r.id for r in store.list(limit=10)] == [rec.id]


def test_a_replayed_record_keeps_the_feedback_given_meanwhile(store: Store) -> None:
    rec = make_record(digit=1)
    store.record(rec)
    assert store.set_label(rec.id, 7)
    store.record(rec)  # e.g. replayed from the spool after an outage
    got = store.get(rec.id)
    assert got is not None and got.label == 7


def test_list_is_newest_first_and_honours_limit(store: Store) -> None:
    recs = [make_record(T0 + timedelta(seconds=i)) for i in range(5)]
    for rec in reversed(recs[:3]):  # insertion order must not matter
        store.record(rec)
    for rec in recs[3:]:
        store.record(rec)
    assert [r.id for r in store.list(limit=10)] == [r.id for r in reversed(recs)]
    assert [r.id for r in store.list(limit=2)] == [recs[4].id, recs[3].id]


def test_before_returns_only_strictly_older_records(store: Store) -> None:
    recs = [make_record(T0 + timedelta(milliseconds=i)) for i in range(4)]
    for rec in recs:
        store.record(rec)
    older = store.list(limit=10, before=recs[2].created)
    assert [r.id for r in older] == [recs[1].id, recs[0].id]


def test_paging_with_the_cursor_has_no_gaps_or_repeats_even_with_equal_timestamps(store: Store) -> None:
    # 23 records in groups that share a timestamp, so page boundaries fall inside groups.
    recs = [make_record(T0 + timedelta(seconds=i // 4), digit=i % 10) for i in range(23)]
    for rec in recs:
        store.record(rec)
    everything = store.list(limit=100)
    assert len(everything) == 23
    for page in (1, 3, 4, 5, 22):
        assert [r.id for r in page_through(store, page)] == [r.id for r in everything]
    # Newest first; equal timestamps in one fixed order (the id breaks ties).
    keys = [(r.created, r.id) for r in everything]
    assert len({r.created for r in everything}) == 6
    assert keys == sorted(keys, reverse=True)


def test_digit_and_model_filters_each_and_together(store: Store) -> None:
    recs = [
        make_record(T0 + timedelta(seconds=i), digit=i % 3, model="cnn" if i % 2 else "softmax")
        for i in range(12)
    ]
    for rec in recs:
        store.record(rec)

    def expect(keep: Callable[[PredictionRecord], bool]) -> list[uuid.UUID]:
        return [r.id for r in sorted(recs, key=lambda r: r.created, reverse=True) if keep(r)]

    assert [r.id for r in store.list(limit=100, digit=2)] == expect(lambda r: r.digit == 2)
    assert [r.id for r in store.list(limit=100, model="cnn")] == expect(lambda r: r.model == "cnn")
    both = store.list(limit=100, digit=1, model="softmax")
    assert [r.id for r in both] == expect(lambda r: r.digit == 1 and r.model == "softmax")
    assert both
    assert [r.id for r in page_through(store, 2, digit=0)] == expect(lambda r: r.digit == 0)
    assert store.list(limit=100, digit=9) == []


def test_shadow_records_are_listed_only_when_asked_and_paging_skips_them(store: Store) -> None:
    # Every third record a shadow (extra.shadow, as service/lifecycle/shadow.py writes them), some sharing
    # a timestamp with their primary, so pages of the history fall across them.
    recs = [
        make_record(
            T0 + timedelta(seconds=i // 2),
            digit=i % 10,
            extra={"api": "predict", **({"shadow": True, "primary_version": "2"} if i % 3 == 0 else {})},
        )
        for i in range(18)
    ]
    for rec in recs:
        store.record(rec)
    everything = store.list(limit=100, shadows=True)
    assert len(everything) == 18
    primaries = [r.id for r in everything if not r.extra.get("shadow")]
    assert len(primaries) == 12
    assert [r.id for r in store.list(limit=100)] == primaries
    for page in (1, 2, 5):
        assert [r.id for r in page_through(store, page)] == primaries
        assert [r.id for r in page_through(store, page, shadows=True)] == [r.id for r in everything]
    # With a filter too: digit 3 is one shadow (i=3) and one primary (i=13).
    threes = [r.id for r in everything if r.digit == 3]
    assert len(threes) == 2
    assert [r.id for r in store.list(limit=100, digit=3)] == [recs[13].id]


def test_set_label_marks_known_records_and_refuses_unknown_ids(store: Store) -> None:
    rec = make_record(digit=3)
    store.record(rec)
    assert store.set_label(rec.id, 8) is True
    got = store.get(rec.id)
    assert got is not None and got.label == 8
    assert store.set_label(uuid.uuid4(), 8) is False
    assert store.get(rec.id) == replace(rec, label=8)


def test_labelled_yields_exactly_the_labelled_records(store: Store) -> None:
    recs = [make_record(T0 + timedelta(seconds=i), digit=i % 10) for i in range(10)]
    for rec in recs:
        store.record(rec)
    labels = {recs[1].id: 1, recs[4].id: 9, recs[8].id: 0}
    for record_id, label in labels.items():
        store.set_label(record_id, label)
    got = {r.id: r for r in store.labelled()}
    assert {i: r.label for i, r in got.items()} == labels
    assert got[recs[4].id] == replace(recs[4], label=9)


def test_health_reports_ok(store: Store) -> None:
    health = store.health()
    assert health["ok"] is True
    assert health["status"] == "ok"
