"""The MNIST loader: real files load; missing, truncated or corrupt files fail with a clear message."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.data import FILES, OFFICIAL_SHA256, SUMS_FILE, load_mnist, load_test_set
from service.errors import DataError


def idx_bytes(array: np.ndarray, *, magic: bytes | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX file of unsigned bytes; `magic`/`dims` override the header to make it wrong."""
    shape = array.shape if dims is None else dims
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    return header + struct.pack(f">{len(shape)}I", *shape) + array.astype(np.uint8).tobytes()


def write_trusted(folder: Path, files: dict[str, bytes]) -> None:
    """Write the files and a SHA256SUMS listing them, so only the content checks can fail."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    sums = "".join(f"{hashlib.sha256(c).hexdigest()}  {n}\n" for n, c in files.items())
    (folder / SUMS_FILE).write_text(sums)


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    """A made-up but well-formed test set: random pixels and labels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10_000, dtype=np.uint8)


@pytest.fixture
def data_copy(mnist_data_dir: Path, tmp_path: Path) -> Path:
    """The real files and their SHA256SUMS, copied so a test may damage them."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in [*FILES.values(), SUMS_FILE]:
        if (mnist_data_dir / name).exists():
            shutil.copy(mnist_data_dir / name, folder / name)
    return folder


def test_real_files_load_with_the_documented_shapes_and_class_counts(mnist_data_dir: Path) -> None:
    mnist = load_mnist(mnist_data_dir)
    assert mnist.train_images.shape == (60_000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10_000, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60_000,) and mnist.test_labels.shape == (10_000,)
    # Per-class counts of the training labels as published with the data set.
    counts = np.bincount(mnist.train_labels, minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # White ink on black: mostly background zeros, strokes reaching full intensity.
    assert np.median(mnist.test_images) == 0 and mnist.test_images.max() == 255
    assert set(mnist.sha256) == set(FILES.values())


def test_test_set_alone_matches_the_full_load(mnist_data_dir: Path) -> None:
    images, labels, digests = load_test_set(mnist_data_dir)
    mnist = load_mnist(mnist_data_dir)
    assert np.array_equal(images, mnist.test_images) and np.array_equal(labels, mnist.test_labels)
    assert digests.items() <= mnist.sha256.items()


def test_missing_file_is_named_with_its_folder_and_how_to_get_it(data_copy: Path) -> None:
    (data_copy / FILES["test_labels"]).unlink()
    with pytest.raises(DataError) as raised:
        load_mnist(data_copy)
    message = str(raised.value)
    assert FILES["test_labels"] in message and str(data_copy) in message and "mnist download" in message
    assert "\n" not in message


def test_one_changed_byte_fails_the_checksum(data_copy: Path) -> None:
    path = data_copy / FILES["train_labels"]
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz .* SHA-256"):
        load_mnist(data_copy)


def test_sums_file_beside_the_data_is_trusted(
    tmp_path: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_set
    write_trusted(
        tmp_path,
        {
            FILES["test_images"]: gzip.compress(idx_bytes(images)),
            FILES["test_labels"]: gzip.compress(idx_bytes(labels)),
        },
    )
    loaded_images, loaded_labels, _ = load_test_set(tmp_path)
    assert np.array_equal(loaded_images, images) and np.array_equal(loaded_labels, labels)


def test_unlisted_digest_is_rejected_without_a_sums_file(
    tmp_path: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = test_set
    write_trusted(
        tmp_path,
        {
            FILES["test_images"]: gzip.compress(idx_bytes(images)),
            FILES["test_labels"]: gzip.compress(idx_bytes(labels)),
        },
    )
    (tmp_path / SUMS_FILE).unlink()
    with pytest.raises(DataError, match="SHA-256") as raised:
        load_test_set(tmp_path)
    # The message shows what was expected: the official digest.
    assert OFFICIAL_SHA256[FILES["test_images"]][:16] in str(raised.value)


def _truncated_gzip(images: np.ndarray) -> bytes:
    whole = gzip.compress(idx_bytes(images))
    return whole[: len(whole) // 2]


CORRUPTIONS: dict[str, tuple[Callable[[np.ndarray], bytes], str]] = {
    "truncated gzip stream": (_truncated_gzip, "gzip"),
    "wrong magic (labels file)": (lambda a: gzip.compress(idx_bytes(a, magic=b"\0\0\x08\x01")), "magic"),
    "wrong type code (int32)": (lambda a: gzip.compress(idx_bytes(a, magic=b"\0\0\x0c\x03")), "magic"),
    "wrong image count": (lambda a: gzip.compress(idx_bytes(a, dims=(9_999, 28, 28))), "dimensions"),
    "wrong image size": (lambda a: gzip.compress(idx_bytes(a, dims=(10_000, 27, 27))), "dimensions"),
    "missing pixels": (lambda a: gzip.compress(idx_bytes(a)[:-100]), "bytes after decompression"),
    "trailing bytes": (lambda a: gzip.compress(idx_bytes(a) + b"\0"), "bytes after decompression"),
    "header cut short": (lambda a: gzip.compress(idx_bytes(a)[:10]), "truncated header"),
    "empty file": (lambda a: b"", "shorter than an IDX header"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_corrupt_file_with_a_trusted_checksum_still_fails_to_parse(
    corruption: str, tmp_path: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    make, reason = CORRUPTIONS[corruption]
    images, labels = test_set
    write_trusted(
        tmp_path,
        {FILES["test_images"]: make(images), FILES["test_labels"]: gzip.compress(idx_bytes(labels))},
    )
    with pytest.raises(DataError, match="corrupt") as raised:
        load_test_set(tmp_path)
    message = str(raised.value)
    assert reason in message and FILES["test_images"] in message and str(tmp_path) in message
