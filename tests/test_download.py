"""Downloading MNIST, against a real HTTP server on 127.0.0.1 serving the files (no internet needed)."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.data import FILES, SUMS_FILE, load_mnist
from service.download import download_mnist
from service.errors import DataError
from tests.conftest import free_port


class Mirror:
    """A loopback HTTP server over one folder, remembering which paths were asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requested: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requested.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean; requests are recorded above

        handler = functools.partial(Handler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mnist/"
        (folder / "mnist").mkdir(exist_ok=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Factory: serve(files) -> Mirror whose /mnist/ holds `files` (name -> source path or bytes)."""
    mirrors: list[Mirror] = []

    def start(files: dict[str, Path | bytes]) -> Mirror:
        root = tmp_path / f"mirror{len(mirrors)}"
        (root / "mnist").mkdir(parents=True)
        for name, source in files.items():
            if isinstance(source, Path):
                shutil.copy(source, root / "mnist" / name)
            else:
                (root / "mnist" / name).write_bytes(source)
        mirror = Mirror(root)
        mirrors.append(mirror)
        return mirror

    yield start
    for mirror in mirrors:
        mirror.stop()


def real_files(mnist_data_dir: Path) -> dict[str, Path | bytes]:
    return {name: mnist_data_dir / name for name in FILES.values()}


def target_dir(tmp_path: Path, mnist_data_dir: Path) -> Path:
    """An empty data folder that already has the SHA256SUMS of the files the mirror serves.

    The shared train-images file is a faithful reconstruction whose digest is not the official one; its
    SHA256SUMS is what vouches for it, as it would beside any non-official copy.
    """
    folder = tmp_path / "data"
    folder.mkdir()
    if (mnist_data_dir / SUMS_FILE).exists():
        shutil.copy(mnist_data_dir / SUMS_FILE, folder / SUMS_FILE)
    return folder


def test_download_fetches_verifies_and_shows_progress(
    serve, mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = serve(real_files(mnist_data_dir))
    folder = target_dir(tmp_path, mnist_data_dir)
    paths = download_mnist(folder, [mirror.url])
    assert sorted(p.name for p in paths) == sorted(FILES.values())
    assert load_mnist(folder).train_images.shape == (60_000, 28, 28)
    assert not list(folder.glob("*.part"))
    progress = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in progress and "100%" in progress


def test_verified_files_are_not_downloaded_again(serve, mnist_data_dir: Path, tmp_path: Path) -> None:
    mirror = serve(real_files(mnist_data_dir))
    folder = target_dir(tmp_path, mnist_data_dir)
    download_mnist(folder, [mirror.url], progress=False)
    assert len(mirror.requested) == 4
    download_mnist(folder, [mirror.url], progress=False)
    assert len(mirror.requested) == 4


def test_damaged_local_file_is_replaced(serve, mnist_data_dir: Path, tmp_path: Path) -> None:
    mirror = serve(real_files(mnist_data_dir))
    folder = target_dir(tmp_path, mnist_data_dir)
    download_mnist(folder, [mirror.url], progress=False)
    (folder / FILES["test_labels"]).write_bytes(b"not the labels")
    download_mnist(folder, [mirror.url], progress=False)
    assert mirror.requested[-1] == "/mnist/" + FILES["test_labels"]
    assert load_mnist(folder).test_labels.shape == (10_000,)


def test_checksum_mismatch_keeps_nothing_and_says_why(serve, mnist_data_dir: Path, tmp_path: Path) -> None:
    files = real_files(mnist_data_dir)
    damaged = bytearray((mnist_data_dir / FILES["test_images"]).read_bytes())
    damaged[1000] ^= 0xFF
    files[FILES["test_images"]] = bytes(damaged)
    mirror = serve(files)
    folder = target_dir(tmp_path, mnist_data_dir)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*SHA-256") as raised:
        download_mnist(folder, [mirror.url], progress=False)
    assert mirror.url in str(raised.value)
    assert not (folder / FILES["test_images"]).exists() and not list(folder.glob("*.part"))


def test_next_mirror_is_tried_when_one_fails(serve, mnist_data_dir: Path, tmp_path: Path) -> None:
    empty = serve({})
    good = serve(real_files(mnist_data_dir))
    unreachable = f"http://127.0.0.1:{free_port()}/mnist/"
    folder = target_dir(tmp_path, mnist_data_dir)
    download_mnist(folder, [unreachable, empty.url, good.url], progress=False)
    assert len(empty.requested) == 4 and len(good.requested) == 4
    assert load_mnist(folder).test_images.shape == (10_000, 28, 28)


def test_no_working_mirror_is_a_data_error_listing_each_attempt(tmp_path: Path) -> None:
    urls = [f"http://127.0.0.1:{free_port()}/a/", f"http://127.0.0.1:{free_port()}/b/"]
    with pytest.raises(DataError) as raised:
        download_mnist(tmp_path / "data", urls, progress=False)
    assert all(url in str(raised.value) for url in urls)
