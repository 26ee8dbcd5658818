#!/usr/bin/env bash
# Vanished peers and a lossy link in network namespaces: sockloop relay
# beside HAProxy 2.6, with the same user timeout, keepalive and client and
# server timeouts (see benches/netfaults.py for the scenarios and what is
# measured). Needs root, ip, tc and nft (iproute2, nftables), python3 and
# haproxy; makes its own namespaces (10.0.x.y inside them only) and deletes
# them at the end.
#
# Usage: sudo benches/netfaults.sh
#   SOCKLOOP=path (default target/debug/sockloop: detection times do not
#   depend on the build), HAPROXY=/usr/sbin/haproxy, CLIENTS=50, ROUNDS=2,
#   SCENARIOS="vanish_client vanish_upstream loss", PROXIES="haproxy sockloop"
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

for tool in ip nft python3; do
    command -v "$tool" >/dev/null || { echo "netfaults: needs $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "netfaults: needs root (network namespaces)" >&2; exit 1; }

WORK=$(mktemp -d)
trap drop_work EXIT
python3 benches/netfaults.py "$WORK"
