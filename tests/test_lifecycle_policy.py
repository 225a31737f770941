"""Version policies: which versions on disk are tried, and when enough are chosen."""

from __future__ import annotations

import pytest

from service.lifecycle.policy import PolicyError, VersionPolicy, parse_policies, parse_policy


def test_latest_is_the_default_and_wants_one_version() -> None:
    policy = parse_policies("").default
    assert policy == VersionPolicy("latest", count=1)
    assert policy.order([1, 3, 2]) == [3, 2, 1]
    assert not policy.enough(0) and policy.enough(1)


def test_latest_n_wants_the_n_highest() -> None:
    policy = parse_policy("latest:2")
    assert policy.order([1, 2, 3]) == [3, 2, 1]
    assert not policy.enough(1) and policy.enough(2)


def test_specific_tries_only_the_listed_versions() -> None:
    policy = parse_policy("specific:1,3")
    assert policy.order([1, 2, 3, 4]) == [3, 1]
    assert not policy.enough(5)


def test_all_tries_every_version() -> None:
    policy = parse_policy("all")
    assert policy.order([2, 1]) == [2, 1] and not policy.enough(100)


def test_policies_per_model_with_a_default() -> None:
    policies = parse_policies("all; cnn=latest:2; softmax = specific:1")
    assert str(policies["cnn"]) == "latest:2"
    assert str(policies["softmax"]) == "specific:1"
    assert str(policies["other"]) == "all"


@pytest.mark.parametrize(
    "text", ["newest", "latest:0", "latest:x", "specific:", "specific:a,b", "all:3", "=all"]
)
def test_a_bad_policy_says_what_is_accepted(text: str) -> None:
    with pytest.raises(PolicyError, match=r"latest|specific|model"):
        parse_policies(text)


def test_settings_name_the_variable_of_a_bad_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("MNIST_MODEL_VERSION_POLICY", "newest")
    with pytest.raises(ValidationError, match="model_version_policy"):
        Settings()
