"""Feedback for retraining, read from each real store backend: every labelled record streamed once, shadow
copies and unlabelled predictions left out, and a seeded evaluation slice that keeps its members."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.lifecycle.feedback import in_slice, split_feedback
from service.retrain import gate
from service.store.base import Store
from tests.test_store_contract import T0, make_record, store  # noqa: F401  (the two-backend fixture)

LABELLED = 600  # several pages of either backend's labelled() stream (200 and 500 records a page)


def _fill(store: Store, n: int) -> list[uuid.UUID]:  # noqa: F811
    """n predictions, each then labelled the way feedback arrives (`set_label`)."""
    recs = [make_record(T0 + timedelta(milliseconds=i), digit=i % 10) for i in range(n)]
    store.record_many(recs)  # type: ignore[attr-defined]
    for i, rec in enumerate(recs):
        assert store.set_label(rec.id, (i * 3) % 10)
    return [r.id for r in recs]


def test_every_labelled_record_is_read_once_and_split_by_the_seed(store: Store) -> None:  # noqa: F811
    ids = _fill(store, LABELLED)
    shadow = make_record(T0, digit=2, extra={"shadow": True})
    store.record_many([make_record(T0, digit=1), shadow])  # type: ignore[attr-defined]
    assert store.set_label(shadow.id, 2)
    split = split_feedback(store.labelled(), seed=42, share=0.2)
    assert len(split.train) + len(split.evaluation) == LABELLED
    assert split.skipped == 1  # the shadow copy; the unlabelled record is not in labelled() at all
    assert 0.16 <= len(split.evaluation) / LABELLED <= 0.24
    assert split.train.images.shape == (len(split.train), 28, 28)
    expected = sorted(i for i in range(LABELLED) if in_slice(ids[i], 42, 0.2))
    assert sorted(split.evaluation.labels.tolist()) == sorted((i * 3) % 10 for i in expected)


def test_the_slice_keeps_its_members_as_feedback_grows() -> None:
    ids = [uuid.uuid4() for _ in range(5_000)]
    first = {i for i in ids[:2_000] if in_slice(i, 7, 0.2)}
    later = {i for i in ids if in_slice(i, 7, 0.2)}
    assert first == later & set(ids[:2_000])
    assert {i for i in ids if in_slice(i, 8, 0.2)} != later  # another seed, another slice


@pytest.mark.parametrize(
    ("test_acc", "slice_acc", "servable", "why"),
    [
        (0.996, 0.95, True, ">="),
        (0.990, 0.99, False, "below the threshold"),
        (0.996, 0.90, False, "below the serving version's"),
    ],
)
def test_the_promotion_gate(test_acc: float, slice_acc: float, servable: bool, why: str) -> None:
    ok, reason = gate(test_acc, 0.995, slice_acc, serving_slice=0.92)
    assert ok is servable and why in reason
