"""Shared test helpers: where the data is; a missing real component fails (skips only when asked to)."""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

import pytest

from tests.support import tally

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The one way to turn "component missing" from a failure into a skip: an explicit request (README, Tests).
ALLOW_SKIP_ENV = "MNIST_TEST_ALLOW_SKIP"
ALLOW_SKIP = os.environ.get(ALLOW_SKIP_ENV, "").lower() in {"1", "true", "yes"}

# Fixture plugins, one file per concern (servers, Cassandra, ...).
pytest_plugins = [
    "tests.fixtures.server",
    "tests.fixtures.app",
    "tests.fixtures.cassandra",
    "tests.fixtures.image",
]


def missing(component: str, how_to_get: str) -> None:
    """A real component is absent: fail saying how to get it; skip only when MNIST_TEST_ALLOW_SKIP=1 asks."""
    message = f"{component} is not available: {how_to_get}"
    if ALLOW_SKIP:
        pytest.skip(f"{message} ({ALLOW_SKIP_ENV}=1)")
    pytest.fail(f"{message} (or set {ALLOW_SKIP_ENV}=1 to skip the tests that need it)", pytrace=False)


def require_binary(name: str, how_to_get: str) -> str:
    """Path of an executable on PATH (or an absolute path), else `missing`."""
    found = shutil.which(name)
    if not found:
        missing(name, how_to_get)
    assert found is not None
    return found


def _ports_below_ephemeral() -> range:
    """Ports the kernel never hands out as the local end of an outgoing connection (ip_local_port_range),
    and below Kubernetes' NodePort range (30000-32767), so a chosen port stays free until its server binds."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, min(low, 30000))


_PORTS = _ports_below_ephemeral()
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, never one handed out before in this process.

    Not port 0's pick: that comes from the ephemeral range, where an outgoing connection of the server under
    test (an exporter, a driver) may take it between this call and the server's bind (seen once in CI as a
    gRPC worker failing to bind, which halted gunicorn after /readyz had answered)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS} after 200 tries")


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The MNIST files; CI points MNIST_DATA_DIR at ../shared/data/mnist."""
    path = Path(os.environ.get("MNIST_DATA_DIR", ROOT / "data" / "mnist"))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        missing("MNIST data", f"put the four *-ubyte.gz files in {path} or set MNIST_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests leave screenshots and logs worth looking at (test-output/)."""
    path = ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """Leave this session's counts for the one total `make test` prints at its end."""
    tally.record(os.environ.get("MNIST_TEST_SESSION", "pytest"), terminalreporter.stats, exitstatus)
