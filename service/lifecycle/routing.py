"""Canary and shadow routing: which loaded version answers a request that names none.

Pure functions plus a seedable `Router`; the registry gives them the versions that are loaded. Settings:
`MNIST_MODEL_ROUTING="cnn: 1=90, 2=10; softmax: 1=100"` (weights, any positive integers) and
`MNIST_MODEL_SHADOW="cnn: 2"` (a version that gets a copy of every request; its answer is recorded,
flagged as shadow, never returned).
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass


class RoutingError(ValueError):
    """A routing or shadow setting that does not parse; the message shows the expected form."""


Weights = tuple[tuple[str, int], ...]  # (version, weight), weight > 0


def _entries(text: str) -> list[tuple[str, str]]:
    """'cnn: a; softmax: b' -> [('cnn', 'a'), ('softmax', 'b')]."""
    out = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        model, sep, rest = entry.partition(":")
        if not sep or not model.strip() or not rest.strip():
            raise RoutingError(f"bad entry {entry!r}: want '<model>: ...' (entries separated by ';')")
        out.append((model.strip(), rest.strip()))
    return out


def parse_routes(text: str) -> dict[str, Weights]:
    """'cnn: 1=90, 2=10' -> {'cnn': (('1', 90), ('2', 10))}."""
    routes: dict[str, Weights] = {}
    for model, rest in _entries(text):
        weights = []
        for part in (p.strip() for p in rest.split(",")):
            version, sep, weight = part.partition("=")
            if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
                raise RoutingError(f"bad weight {part!r} for {model}: want '<version>=<integer weight>'")
            if int(weight) > 0:
                weights.append((version.strip(), int(weight)))
        if not weights:
            raise RoutingError(f"routing for {model} gives no version a weight above 0")
        routes[model] = tuple(weights)
    return routes


def parse_shadows(text: str) -> dict[str, str]:
    """'cnn: 2' -> {'cnn': '2'}."""
    shadows = {}
    for model, version in _entries(text):
        if not version.isdigit():
            raise RoutingError(f"bad shadow version {version!r} for {model}: want an integer")
        shadows[model] = version
    return shadows


def usable(weights: Weights, loaded: Collection[str]) -> Weights:
    """The weights of versions that are loaded; the others' share goes to them in proportion."""
    return tuple((v, w) for v, w in weights if v in loaded)


def pick(weights: Sequence[tuple[str, int]], u: float) -> str:
    """The version whose cumulative-weight interval holds `u` (0 <= u < 1); weights must be non-empty."""
    cumulative = []
    total = 0
    for _, weight in weights:
        total += weight
        cumulative.append(total)
    return weights[bisect.bisect_right(cumulative, u * total)][0]


@dataclass
class Router:
    """Draws versions by weight from a seedable generator: the same seed gives the same sequence of picks."""

    seed: int | None = None

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def choose(self, weights: Weights) -> str:
        with self._lock:
            u = self._random.random()
        return pick(weights, u)
