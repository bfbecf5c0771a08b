#!/usr/bin/env bash
# A soak of sluice under operators' changes (scripts/soak.py says what it
# runs, samples and checks): real keep-alive and short-connection clients
# through sluice on the namespace lab for MINUTES (default 10) while
# endpoints are added, removed, drained and reweighted, the file reloaded,
# sluice restarted gracefully and with kill -9, and malformed frames and a
# spoofed SYN flood are sent. Root. Exits non-zero if a request a client
# would not retry failed, memory grew without bound, or sluice died.
#   scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
[ "$(id -u)" = 0 ] || { echo "soak.sh needs root (network namespaces)" >&2; exit 1; }
for t in ip python3; do command -v "$t" >/dev/null || { echo "missing $t (scripts/setup.sh installs the lab's tools)" >&2; exit 1; }; done
cargo build --release --quiet
ID=soak$$
STATE=$(mktemp -d /tmp/sluice-soak.XXXXXX)
cleanup() {
  scripts/netlab.sh down "$ID" >/dev/null 2>&1 || true
  echo "logs: $STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 scripts/soak.py "$PWD/target/release/sluice" "$MINUTES" "$ID" "$STATE"
