"""MNIST IDX files: find, verify (SHA-256, IDX header, size) and parse into uint8 arrays."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.errors import DataError

# The four standard files, and the SHA-256 of the originals as published by the MNIST mirrors.
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Expected array shapes; the IDX header must say exactly this.
SHAPES = {
    "train_images": (60_000, 28, 28),
    "train_labels": (60_000,),
    "test_images": (10_000, 28, 28),
    "test_labels": (10_000,),
}
SUMS_FILE = "SHA256SUMS"
UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST uses
HOW_TO_GET = "run `mnist download --data-dir {dir}` or set MNIST_DATA_DIR to a folder holding the four files"


@dataclass(frozen=True)
class Mnist:
    """The whole data set as uint8 arrays, plus the SHA-256 of each file it came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    sha256: dict[str, str] = field(default_factory=dict)


def load_mnist(data_dir: Path) -> Mnist:
    """Read and verify the four files in `data_dir`; raises `DataError` naming the first bad file."""
    data_dir = Path(data_dir)
    trusted = trusted_digests(data_dir)
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for key, filename in FILES.items():
        arrays[key], digests[filename] = read_verified(data_dir / filename, SHAPES[key], trusted[filename])
    return Mnist(**arrays, sha256=digests)


def load_test_set(data_dir: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Only the 10k test images and labels (what evaluation needs), with their files' SHA-256."""
    data_dir = Path(data_dir)
    trusted = trusted_digests(data_dir)
    images, images_sha = read_verified(
        data_dir / FILES["test_images"], SHAPES["test_images"], trusted[FILES["test_images"]]
    )
    labels, labels_sha = read_verified(
        data_dir / FILES["test_labels"], SHAPES["test_labels"], trusted[FILES["test_labels"]]
    )
    return images, labels, {FILES["test_images"]: images_sha, FILES["test_labels"]: labels_sha}


def trusted_digests(data_dir: Path) -> dict[str, set[str]]:
    """Accepted SHA-256 per file: the official one, plus the one a `SHA256SUMS` beside the data lists."""
    trusted = {name: {digest} for name, digest in OFFICIAL_SHA256.items()}
    sums = data_dir / SUMS_FILE
    if sums.is_file():
        for name, digest in parse_sums(sums.read_text(encoding="utf-8")).items():
            trusted.setdefault(name, set()).add(digest)
    return trusted


def parse_sums(text: str) -> dict[str, str]:
    """`sha256sum` output format: '<64 hex>  <name>' per line ('*' marks binary mode)."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def read_verified(path: Path, shape: tuple[int, ...], accepted: set[str]) -> tuple[np.ndarray, str]:
    """Check the file's SHA-256 against `accepted`, then parse it as IDX of exactly `shape`."""
    if not path.is_file():
        raise DataError(f"{path.name} is missing from {path.parent}: {HOW_TO_GET.format(dir=path.parent)}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest not in accepted:
        raise DataError(
            f"{path.name} in {path.parent} has SHA-256 {digest[:16]}..., not the expected "
            f"{' or '.join(sorted(d[:16] + '...' for d in accepted))}: {HOW_TO_GET.format(dir=path.parent)}"
        )
    return parse_idx(raw, path, shape), digest


def parse_idx(raw: bytes, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Decompress (if gzip) and parse one IDX file of unsigned bytes; header and length must match `shape`."""

    def bad(reason: str) -> DataError:
        return DataError(
            f"{path.name} in {path.parent} is corrupt ({reason}): {HOW_TO_GET.format(dir=path.parent)}"
        )

    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise bad(f"gzip: {exc}") from None
    if len(raw) < 4:
        raise bad("shorter than an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != UBYTE or ndim != len(shape):
        raise bad(f"magic 0x{raw[:4].hex()}, expected 0x0000{UBYTE:02x}{len(shape):02x}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise bad("truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    if dims != shape:
        raise bad(f"dimensions {list(dims)}, expected {list(shape)}")
    expected = header_len + int(np.prod(shape))
    if len(raw) != expected:
        raise bad(f"{len(raw)} bytes after decompression, expected {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
