"""Write notices between the workers of one server: "I stored records", as a datagram to every sibling.

A client may read a prediction through another gunicorn worker than the one that answered it, while the
record still waits in that worker's write queue. The reading worker then waits for a notice instead of
polling the store: each worker binds a Unix datagram socket `written-<pid>-<rand>.sock` in the folder
its siblings share (the spool folder), and its writer sends one byte to every other socket there after
each stored batch. A socket nobody listens on any more (a killed worker) is removed by the first sender
that finds it dead. Sending never blocks: a sibling with a full socket buffer has notices waiting already.
The folder is local to one host (emptyDir in the chart), as the spool's own flocks already assume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "written-"
PEER_REFRESH_S = 1.0  # how often the list of sibling sockets is read again (a new worker joins)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


class WriteNotices:
    """This worker's notice socket: `announce()` to the siblings, `wait()` for one of theirs."""

    @classmethod
    def open(cls, directory: Path) -> WriteNotices | None:
        """Notices in `directory`, or None (logged) where a Unix socket cannot be made there."""
        try:
            return cls(directory)
        except OSError as exc:
            log.warning("no write notices between workers (%s): a read through another worker may 404", exc)
            return None

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}.sock"
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise OSError(f"{self.path}: too long for a Unix socket path")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._peers: list[Path] = []
        self._peers_read_at = 0.0
        self._heard = threading.Condition()
        self._generation = 0  # notices heard so far
        self._closed = False
        self._listener = threading.Thread(target=self._listen, name="write-notices", daemon=True)
        self._listener.start()

    @property
    def generation(self) -> int:
        """How many notices this worker has heard; pass it to `wait` to wait for the next one."""
        with self._heard:
            return self._generation

    def announce(self) -> None:
        """Tell every sibling that records were stored (a few µs per sibling, never blocks)."""
        if self._closed:
            return
        now = time.monotonic()
        if now - self._peers_read_at >= PEER_REFRESH_S:
            self._peers = [p for p in self.directory.glob(f"{PREFIX}*.sock") if p != self.path]
            self._peers_read_at = now
        for peer in self._peers:  # replaced, never changed in place: callers may be several threads
            try:
                self._out.sendto(b"w", str(peer))
            except BlockingIOError:
                pass  # its buffer is full of notices it has not read yet
            except (ConnectionRefusedError, FileNotFoundError):
                peer.unlink(missing_ok=True)  # its worker is gone
                self._peers_read_at = 0.0  # read the folder again next time
            except OSError as exc:
                log.warning("write notice to %s failed: %s", peer, exc)

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait until a notice arrives after the `seen` generation; False when `timeout` passes first."""
        with self._heard:
            return self._heard.wait_for(lambda: self._generation > seen or self._closed, timeout) and (
                not self._closed
            )

    def _listen(self) -> None:
        while True:
            try:
                self._sock.recv(64)
            except OSError:
                return
            with self._heard:
                if self._closed:
                    return
                self._generation += 1
                self._heard.notify_all()

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        with self._heard:
            self._closed = True
            self._heard.notify_all()
        with contextlib.suppress(OSError):  # only a listener that already stopped cannot be woken
            self._out.sendto(b"x", str(self.path))  # wakes the listener blocked in recv
        self._listener.join(5)
        self.path.unlink(missing_ok=True)
        self._sock.close()
        self._out.close()
