"""A thread per worker that looks at the model directory every few seconds and asks the registry to
refresh; started after gunicorn forks the worker (threads do not survive a fork), stopped at shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watcher:
    """Calls `refresh` every `interval_s` seconds until `stop()`; a failing refresh is logged, not fatal."""

    def __init__(self, refresh: Callable[[], object], interval_s: float, name: str = "model-watcher") -> None:
        self._refresh = refresh
        self.interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self._refresh()
            except Exception:  # a bad poll (disk hiccup) must not end watching; the next poll retries
                log.exception("model directory refresh failed")
