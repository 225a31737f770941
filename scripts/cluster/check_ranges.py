"""Exit 1 when one of the cluster's ranges overlaps a network the host already routes (`ip route`).

Usage: check_ranges.py BRIDGE CIDR... The default route, routes on lo (the node address lives there) and
routes through the cluster's own bridge (left by an earlier `up`) do not count."""

from __future__ import annotations

import ipaddress
import subprocess
import sys


def host_networks(bridge: str) -> list[tuple[ipaddress.IPv4Network, str]]:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in routes.splitlines():
        words = line.split()
        if words and words[0] in {"local", "broadcast", "unreachable", "prohibit", "blackhole"}:
            words = words[1:]
        if not words or words[0] == "default" or f"dev {bridge}" in line or "dev lo" in line:
            continue
        try:
            found.append((ipaddress.IPv4Network(words[0], strict=False), line.strip()))
        except ValueError:
            continue
    return found


def main() -> int:
    bridge, *cidrs = sys.argv[1:]
    ours = [ipaddress.IPv4Network(cidr) for cidr in cidrs]
    clashes = [
        f"{mine} overlaps the host route {line!r}"
        for network, line in host_networks(bridge)
        for mine in ours
        if network.overlaps(mine)
    ]
    print("\n".join(clashes), file=sys.stderr)
    return 1 if clashes else 0


if __name__ == "__main__":
    sys.exit(main())
