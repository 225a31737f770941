#!/usr/bin/env bash
# The local stand-in for a storage provisioner that hands out writable volumes (kind's local-path-provisioner
# makes its directories 0777): the controller-manager's hostPath provisioner creates /tmp/hostpath_pv/<uuid> as
# root 0750, which non-root pods (Cassandra runs as 999) cannot write, and hostPath volumes ignore fsGroup.
# This loop opens each new volume directory up once, within a second of its creation.
set -u
while true; do
  for dir in /tmp/hostpath_pv/*/; do
    [[ -d "$dir" && "$(stat -c %a "$dir")" != 777 ]] && chmod 0777 "$dir"
  done
  sleep 1
done
