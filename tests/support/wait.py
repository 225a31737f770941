"""One way to wait in a test: poll a condition until it holds or a deadline passes, saying what never came."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T | None], timeout: float, what: str = "", interval: float = 0.1) -> T:
    """Call `condition` until it returns something truthy and return that; fail after `timeout` seconds.

    Tests poll real servers (an HTTP answer, a row in Cassandra), so there is no event to wait on; a bounded
    poll with a message naming what never happened is the next best thing to an event.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition!r}")
        time.sleep(interval)
