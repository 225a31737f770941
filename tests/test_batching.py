"""Micro-batching over real HTTP: concurrent requests share model calls, and each gets its own answer."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.service_support import Digit, digits, metric, metric_samples

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 60
CLIENTS = 32
ROUNDS = 8


@pytest.fixture(scope="module")
def sample(mnist_data_dir: Path) -> list[Digit]:
    return digits(mnist_data_dir, 64, start=300)


def _predict(url: str, digit: Digit) -> dict:
    r = requests.post(f"{url}/predict", json={"pixels": digit.unit}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_concurrent_requests_are_batched_and_answers_stay_with_their_requests(
    server_factory, sample: list[Digit]
) -> None:
    server = server_factory({"MNIST_THREADS": "16"}, workers=1)
    # One at a time first: each digit's own answer, computed alone.
    alone = {d.index: np.array(_predict(server.url, d)["probabilities"]) for d in sample}
    before = metric_samples(server.url)

    jobs = [d for _, d in itertools.product(range(ROUNDS), sample)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(lambda d: (d, _predict(server.url, d)), jobs))

    after = metric_samples(server.url)
    batches = metric(after, "mnist_batch_size_count", model="cnn") - metric(
        before, "mnist_batch_size_count", model="cnn"
    )
    images = metric(after, "mnist_batch_size_sum", model="cnn") - metric(
        before, "mnist_batch_size_sum", model="cnn"
    )
    singles = metric(after, "mnist_batch_size_bucket", model="cnn", le="1.0") - metric(
        before, "mnist_batch_size_bucket", model="cnn", le="1.0"
    )
    assert images == len(jobs)
    assert images / batches > 1, f"{len(jobs)} concurrent requests ran as {batches:.0f} model calls"
    assert singles < batches, "every batch held a single image"

    for digit, answer in answers:
        # Batched or not, a digit gets the probabilities it gets alone (float32 noise aside).
        np.testing.assert_allclose(answer["probabilities"], alone[digit.index], atol=1e-4)
    assert len({answer["id"] for _, answer in answers}) == len(jobs)

    # And the records kept the image each request sent.
    for digit, answer in answers[:: len(answers) // 16]:
        rec = requests.get(f"{server.url}/api/predictions/{answer['id']}", timeout=TIMEOUT).json()
        np.testing.assert_allclose(rec["pixels"], digit.pixels / 255.0, atol=2e-3)
        assert rec["digit"] == answer["digit"]


def test_an_idle_server_does_not_wait_for_the_batch_window(server_factory, sample: list[Digit]) -> None:
    # A one-second window: a lone request that waited for it would report latency_ms >= 1000.
    server = server_factory({"MNIST_MAX_BATCH_WAIT_MS": "1000"}, workers=1)
    latencies = [_predict(server.url, d)["latency_ms"] for d in sample[:10]]
    assert max(latencies) < 500, latencies
