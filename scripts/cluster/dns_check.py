"""Exit 0 when the cluster DNS resolves NAME and answers NXDOMAIN for a name outside the cluster.

Usage: dns_check.py SERVER NAME. A raw UDP query (no resolver library on the host is needed); the second query
proves CoreDNS forwards nothing off the machine."""

from __future__ import annotations

import secrets
import socket
import struct
import sys

NXDOMAIN = 3


def query(server: str, name: str) -> tuple[int, int]:
    """(rcode, answer count) of an A query for name."""
    ident = secrets.randbelow(65536)
    header = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(header + question + struct.pack(">HH", 1, 1), (server, 53))
        reply = sock.recv(4096)
    reply_id, flags, _, answers = struct.unpack(">HHHH", reply[:8])
    if reply_id != ident:
        raise RuntimeError("reply to another query")
    return flags & 0xF, answers


def main() -> int:
    server, name = sys.argv[1:]
    rcode, answers = query(server, name)
    if rcode != 0 or answers == 0:
        print(f"{name}: rcode {rcode}, {answers} answers", file=sys.stderr)
        return 1
    rcode, _ = query(server, "outside-the-cluster.example")
    if rcode != NXDOMAIN:
        print(f"a name outside the cluster got rcode {rcode}, not NXDOMAIN", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
