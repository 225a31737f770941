"""The local cluster's containment guard (scripts/local-cluster.sh): after the whole run nothing tried to
leave the machine, and the guard really stops a pod that tries. Runs last (the e2e conftest orders it)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import LOCAL_CLUSTER, LOCAL_CLUSTER_SCRIPT, Images
from tests.e2e.kube import Namespace

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.integration,
    pytest.mark.skipif(not LOCAL_CLUSTER, reason="the guard belongs to scripts/local-cluster.sh's cluster"),
]

# TEST-NET-3 (RFC 5737): documentation-only, routed nowhere; the probe never gets past the guard anyway.
OUTSIDE = "203.0.113.7"


def guard_counters() -> list[int]:
    out = subprocess.run(
        [str(LOCAL_CLUSTER_SCRIPT), "guard-counters"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [int(n) for n in out.split()]


def test_nothing_tried_to_leave_the_machine() -> None:
    counters = guard_counters()
    assert counters, "the containment guard chain is not installed"
    assert sum(counters) == 0, f"the guard rejected packets during the run: {counters} (make cluster-status)"


def test_the_guard_rejects_a_pod_reaching_outside(
    new_namespace: Callable[[str], Namespace], images: Images
) -> None:
    ns = new_namespace("guard")
    probe = (
        "import socket\n"
        f"try:\n    socket.create_connection(('{OUTSIDE}', 80), timeout=10)\n    print('CONNECTED')\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
    )
    before = sum(guard_counters())
    result = ns.run_kubectl(
        "run", "guard-probe", f"--image={images.service_image}", "--image-pull-policy=Never",
        "--restart=Never", "--attach", "--rm", "--quiet", "--command", "--", "python", "-c", probe,
        timeout=180, check=False,
    )  # fmt: skip
    assert "ConnectionRefusedError" in result.stdout, result.stdout + result.stderr
    time.sleep(1)
    assert sum(guard_counters()) > before, "the connection failed, but not at the guard"
