"""Canary and shadow routing as pure functions: parsing, the weighted pick, the seeded split."""

from __future__ import annotations

import collections

import pytest

from service.lifecycle.routing import Router, RoutingError, parse_routes, parse_shadows, pick, usable


def test_routes_parse_per_model() -> None:
    assert parse_routes("cnn: 1=90, 2=10; softmax: 1=1") == {
        "cnn": (("1", 90), ("2", 10)),
        "softmax": (("1", 1),),
    }
    assert parse_routes("") == {}


def test_a_zero_weight_drops_the_version() -> None:
    assert parse_routes("cnn: 1=100, 2=0") == {"cnn": (("1", 100),)}


@pytest.mark.parametrize("text", ["cnn 1=90", "cnn: 1=ninety", "cnn: one=1", "cnn: 1=0", ": 1=1"])
def test_bad_routes_say_what_is_expected(text: str) -> None:
    with pytest.raises(RoutingError):
        parse_routes(text)


def test_shadows_parse() -> None:
    assert parse_shadows("cnn: 2") == {"cnn": "2"}
    with pytest.raises(RoutingError):
        parse_shadows("cnn: two")


def test_pick_follows_the_cumulative_weights() -> None:
    weights = (("1", 90), ("2", 10))
    assert pick(weights, 0.0) == "1"
    assert pick(weights, 0.8999) == "1"
    assert pick(weights, 0.9) == "2"
    assert pick(weights, 0.9999) == "2"


def test_unloaded_versions_lose_their_share() -> None:
    assert usable((("1", 90), ("2", 10)), {"2"}) == (("2", 10),)


def test_a_90_10_split_over_2000_picks_lands_within_3_points() -> None:
    router = Router(seed=7)
    counts = collections.Counter(router.choose((("1", 90), ("2", 10))) for _ in range(2000))
    assert abs(counts["2"] / 2000 - 0.10) <= 0.03, counts
    assert counts["1"] + counts["2"] == 2000


def test_the_same_seed_gives_the_same_picks() -> None:
    weights = (("1", 50), ("2", 30), ("3", 20))
    a, b, c = Router(seed=3), Router(seed=3), Router(seed=4)
    picks = [a.choose(weights) for _ in range(200)]
    assert picks == [b.choose(weights) for _ in range(200)]
    assert picks != [c.choose(weights) for _ in range(200)]
    assert set(picks) == {"1", "2", "3"}
