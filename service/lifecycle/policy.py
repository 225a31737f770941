"""Which versions of a model to serve, like TF Serving's `model_version_policy`.

`latest` (the default) serves the highest version that passes its checks, `latest:N` the N highest,
`specific:1,3` exactly those, `all` every valid version. A version that fails its checks is skipped, so with
`latest` a broken new version leaves the previous one serving.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class PolicyError(ValueError):
    """A version policy string that does not parse; the message shows the accepted forms."""


FORMS = "latest, latest:N, specific:V1,V2,... or all"


@dataclass(frozen=True)
class VersionPolicy:
    """`kind` is latest, specific or all; `count` for latest:N, `versions` for specific."""

    kind: str = "latest"
    count: int = 1
    versions: frozenset[int] = frozenset()

    def order(self, on_disk: Iterable[int]) -> list[int]:
        """The versions worth trying, best first (highest first)."""
        ordered = sorted(set(on_disk), reverse=True)
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered

    def enough(self, chosen: int) -> bool:
        """True when `chosen` valid versions satisfy the policy (no need to look at older ones)."""
        return self.kind == "latest" and chosen >= self.count

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.count == 1 else f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in sorted(self.versions))
        return "all"


def parse_policy(text: str) -> VersionPolicy:
    """'latest' | 'latest:N' | 'specific:1,3' | 'all' -> VersionPolicy."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "latest":
            count = int(arg) if arg.strip() else 1
            if count < 1:
                raise PolicyError(f"latest:N needs N >= 1, got {text!r}")
            return VersionPolicy("latest", count=count)
        if kind == "specific":
            versions = frozenset(int(v) for v in arg.split(",") if v.strip())
            if not versions or min(versions) < 1:
                raise PolicyError(f"specific: needs version numbers >= 1, got {text!r}")
            return VersionPolicy("specific", versions=versions)
    except ValueError as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"bad version policy {text!r}: want {FORMS}") from None
    if kind == "all" and not arg.strip():
        return VersionPolicy("all")
    raise PolicyError(f"bad version policy {text!r}: want {FORMS}")


@dataclass(frozen=True)
class Policies:
    """The policy of every model: a default plus per-model overrides."""

    default: VersionPolicy
    per_model: dict[str, VersionPolicy]

    def __getitem__(self, model: str) -> VersionPolicy:
        return self.per_model.get(model, self.default)


def parse_policies(text: str) -> Policies:
    """'latest' (every model) or 'cnn=latest:2; softmax=specific:1' (the rest get 'latest').

    A bare policy among the entries sets the default: 'all; cnn=latest'.
    """
    default = VersionPolicy()
    per_model: dict[str, VersionPolicy] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        model, sep, policy = entry.partition("=")
        if sep:
            if not model.strip():
                raise PolicyError(f"policy entry {entry!r} names no model")
            per_model[model.strip()] = parse_policy(policy)
        else:
            default = parse_policy(entry)
    return Policies(default, per_model)
