"""Whether a version on disk may serve: complete, intact, good enough, and answering.

A version is refused (never replaces the serving one) when any check fails; `Refused.reason` is the short
label of the failure metric: metadata, rejected, checksum, accuracy, load or warmup.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.artifacts import METADATA, TFLITE, Artifact, ArtifactError, load_artifact

# `mnist retrain` writes this file (holding the reason) into a version its promotion gate refused.
REJECTED = "rejected"
REASONS = ("metadata", "rejected", "checksum", "accuracy", "load", "warmup")


class Refused(Exception):
    """A version failed a check; `reason` is one of REASONS, the message says what exactly."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Fingerprint:
    """Names, sizes and modification times of a version's files: a failed version is checked again only
    when this changes (a copy completed, a file fixed), not at every poll."""

    entries: tuple[tuple[str, int, int], ...]

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        entries = []
        for child in sorted(path.iterdir()) if path.is_dir() else []:
            try:
                stat = child.stat()
            except FileNotFoundError:  # removed while we looked
                continue
            entries.append((child.name, stat.st_size, stat.st_mtime_ns))
        return cls(tuple(entries))


def scan(model_dir: Path) -> dict[str, list[int]]:
    """The version folders on disk: {model: [versions ascending]}; only all-digit names count, so a
    `.staging-3` folder that is still being written is invisible."""
    found: dict[str, list[int]] = {}
    if not model_dir.is_dir():
        return found
    for name_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = sorted(int(p.name) for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if versions:
            found[name_dir.name] = versions
    return found


def verify(path: Path, name: str, version: int) -> Artifact:
    """Every check that needs no interpreter; returns the artifact or raises `Refused`."""
    if (path / REJECTED).exists():
        reason = (path / REJECTED).read_text(encoding="utf-8", errors="replace").strip()
        raise Refused("rejected", f"{path} is marked rejected: {reason or 'no reason given'}")
    try:
        artifact = load_artifact(path)
    except ArtifactError as exc:
        raise Refused("metadata", str(exc)) from None
    if artifact.name != name or artifact.version != str(version):
        raise Refused(
            "metadata",
            f"{path / METADATA} says {artifact.name} v{artifact.version}, the folder {name}/{version}",
        )
    _verify_files(artifact)
    _verify_accuracy(artifact)
    return artifact


def _verify_files(artifact: Artifact) -> None:
    """model.tflite must be listed in metadata.json's `files` and match; other listed files that are
    present must match too (the serving image may leave model.keras out)."""
    files: dict[str, Any] = artifact.metadata.get("files") or {}
    if TFLITE not in files:
        raise Refused("checksum", f"{artifact.path / METADATA} lists no checksum for {TFLITE}")
    for filename, expected in files.items():
        path = artifact.path / filename
        if filename != TFLITE and not path.exists():
            continue
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise Refused("checksum", f"{path} has {size} bytes, metadata.json says {expected.get('bytes')}")
        digest = _sha256(path)
        if digest != expected.get("sha256"):
            raise Refused(
                "checksum", f"{path} has sha256 {digest}, metadata.json says {expected.get('sha256')}"
            )


def _verify_accuracy(artifact: Artifact) -> None:
    try:
        accuracy, threshold = artifact.accuracy, artifact.min_accuracy
    except (KeyError, TypeError, ValueError):
        raise Refused(
            "metadata", f"{artifact.path / METADATA} lacks test_accuracy or thresholds.min_accuracy"
        ) from None
    if accuracy < threshold:
        raise Refused(
            "accuracy", f"test accuracy {accuracy:.4f} is below the threshold {threshold:.4f} it records"
        )


def check_answers(probabilities: np.ndarray, n: int) -> None:
    """A warm-up batch's answer must be n rows of 10 finite probabilities that sum to 1."""
    if probabilities.shape != (n, 10):
        raise Refused("warmup", f"warm-up batch of {n} answered with shape {list(probabilities.shape)}")
    if not np.isfinite(probabilities).all():
        raise Refused("warmup", "warm-up batch answered with NaN or infinite values")
    sums = probabilities.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise Refused("warmup", f"warm-up probabilities sum to {sums.min():.4f}..{sums.max():.4f}, not 1")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
