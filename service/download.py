"""Fetch the four MNIST files from the canonical mirrors, with a progress bar and a SHA-256 check."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from service.data import FILES, trusted_digests
from service.errors import DataError

# Tried in order; the original host (yann.lecun.com) now often answers 403, so it comes last.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CHUNK = 64 * 1024
TIMEOUT_S = 30


def download_mnist(data_dir: Path, mirrors: Sequence[str] = MIRRORS, *, progress: bool = True) -> list[Path]:
    """Make sure `data_dir` holds the four verified files; download only the missing or bad ones.

    A file is accepted when its SHA-256 is the official one or the one a `SHA256SUMS` in `data_dir` lists.
    Raises `DataError` when no mirror delivers a file with an accepted checksum.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    trusted = trusted_digests(data_dir)
    paths = []
    for filename in FILES.values():
        path = data_dir / filename
        if not (path.is_file() and _sha256(path) in trusted[filename]):
            _fetch(filename, path, mirrors, trusted[filename], progress)
        paths.append(path)
    return paths


def _fetch(filename: str, path: Path, mirrors: Sequence[str], accepted: set[str], progress: bool) -> None:
    """Try each mirror until one delivers bytes with an accepted digest; write atomically via a .part file."""
    partial = path.with_name(path.name + ".part")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            digest = _stream(url, partial, progress)
        except (urllib.error.URLError, OSError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        if digest in accepted:
            partial.replace(path)
            return
        failures.append(f"{url}: SHA-256 {digest[:16]}... is not the expected one")
    partial.unlink(missing_ok=True)
    raise DataError(f"could not download {filename} into {path.parent}: " + "; ".join(failures))


def _stream(url: str, target: Path, progress: bool) -> str:
    """Copy `url` to `target` chunk by chunk under a tqdm bar; return the SHA-256 of what arrived."""
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress
        ) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                bar.update(len(chunk))
    return sha.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
