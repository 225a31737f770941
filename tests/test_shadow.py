"""Shadow copies: answered by the shadow version, recorded in a real SQLite store flagged as shadow, with
the primary's id and digit, and counted by agreement."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from service import metrics
from service.inference import ModelRegistry
from service.lifecycle.shadow import Primary, ShadowRecorder, is_shadow, shadow_id
from service.settings import Settings
from service.store.queue import WriteQueue
from service.store.sqlite import SqliteStore
from tests.service_support import digits
from tests.support.model_versions import add_version, model_dir_with


@pytest.fixture
def registry(tmp_path: Path):
    model_dir = model_dir_with(tmp_path, softmax=1)
    add_version(model_dir, "softmax", 2)
    settings = Settings(
        model_dir=model_dir, default_model="softmax", model_poll_s=0, model_version_policy="all",
        model_shadow="softmax: 2",
    )  # fmt: skip
    registry = ModelRegistry.load(settings)
    yield registry
    registry.close()


def test_shadow_answers_are_recorded_flagged_and_point_at_the_primary(
    registry: ModelRegistry, tmp_path: Path, mnist_data_dir: Path
) -> None:
    store = SqliteStore(tmp_path / "p.db")
    writes = WriteQueue(store, 100).start()
    sample = digits(mnist_data_dir, 40)
    images = np.stack([d.pixels for d in sample]).astype(np.float32) / 255
    primary = registry.get(version="1")
    answered = primary.predict(images).argmax(axis=1).tolist()
    ids = [uuid.uuid4() for _ in sample]
    shadow = registry.shadow("softmax", primary)
    assert shadow is not None
    agree = metrics.SHADOW_PREDICTIONS.labels("softmax", "1", "2", "agree")._value.get()

    futures = ShadowRecorder(writes).send(shadow, images, Primary(ids, answered, "1", api="predict"))
    assert len(futures) == 2  # 40 images in batches of 32
    for f in futures:
        f.result(30)
    assert writes.flush(30)

    records = [store.get(shadow_id(i, "2")) for i in ids]
    assert all(r is not None for r in records)
    for rec, primary_id, digit in zip(records, ids, answered, strict=True):
        assert rec is not None and is_shadow(rec)
        assert rec.version == "2" and rec.extra["primary_id"] == str(primary_id)
        assert rec.extra["primary_version"] == "1" and rec.extra["primary_digit"] == digit
        assert rec.digit == digit  # version 2 is a copy of version 1: same answers
    assert all(store.get(i) is None for i in ids)  # only the shadow's records were written here
    assert metrics.SHADOW_PREDICTIONS.labels("softmax", "1", "2", "agree")._value.get() == agree + 40
    writes.drain(10)
    store.close()
