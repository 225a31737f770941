"""A caller's deadline, from whichever protocol carried it, as one `time.perf_counter()` instant.

HTTP: the `X-Request-Timeout` header, a decimal number of seconds (`0.25`, `2`, `1.5e-1`) counted from when
the server started on the request. Open Inference Protocol v2: the `timeout` request parameter, in
microseconds (REST and gRPC; 0 = none). gRPC: the call's own deadline (`context.time_remaining()`). When
several are given the earliest wins. The data plane drops a request whose deadline has passed before the
model runs it (service/inference.py).
"""

from __future__ import annotations

import re

from service.errors import BadInput

TIMEOUT_HEADER = "X-Request-Timeout"
# Longer than any request could take; above it a value is more likely a unit mistake (milliseconds).
MAX_TIMEOUT_S = 86_400.0
# Digits with an optional fraction and exponent: what float() reads, without its "nan", "inf" and "1_0".
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def header_seconds(value: str | None) -> float | None:
    """`X-Request-Timeout`'s seconds (None when absent); `BadInput` naming the format when it is not one."""
    if value is None:
        return None
    seconds = float(value) if _NUMBER.fullmatch(value) else 0.0
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise BadInput(
            f"{TIMEOUT_HEADER} must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:g} (e.g. 0.5), "
            f"got {value!r}"
        )
    return seconds


def earliest(started: float, *seconds: float | None) -> float | None:
    """The deadline (perf_counter time) of the shortest of the given timeouts after `started`, if any."""
    given = [s for s in seconds if s is not None]
    return started + min(given) if given else None


def v2_seconds(timeout_us: int) -> float | None:
    """The v2 `timeout` parameter (microseconds, 0 = none) in seconds."""
    return timeout_us / 1e6 if timeout_us > 0 else None
