#!/usr/bin/env bash
# Soak: sluice under real keep-alive and short-connection clients for
# MINUTES (default 10) while a driver makes the changes operators make, over
# and over: endpoint add, weight change, drain with a deadline then remove,
# `endpoints set`, `reload` of an edited file, a malformed-frame burst, a
# spoofed SYN/ACK flood, a graceful restart (SIGTERM + flow snapshot) and a
# `kill -9` restart. Samples sluice's RSS and flow-table occupancy, times
# every control change, and fails (exit 1) if a request failed that its
# client would not retry, RSS grew past its bound, or sluice died on its
# own. Run as root:
#
#   scripts/soak.sh [MINUTES] [--break remove-undrained|no-restart]
#                   [--no-restarts] [--no-build] [--out DIR]
#
# --break runs a deliberately wrong step to show the soak catches it. The
# lab is 4 backends and 2 clients (scripts/netlab.sh, namespaces
# sl-sk<pid>-*), removed with every process on exit, Ctrl-C or failure.
# The driver and the verdict are scripts/soak.py (its --help says exactly
# what is checked). Results: summary.json, samples.jsonl and the clients'
# and sluice's logs in --out (default /tmp/sluice-soak-<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MINUTES=10
BUILD=1
OUT=
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --break) EXTRA+=(--break "${2:?}"); shift ;;
    --no-restarts) EXTRA+=(--no-restarts) ;;
    --no-build) BUILD=0 ;;
    --out) OUT=${2:?}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    [0-9]*) MINUTES=$1 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: the soak creates network namespaces" >&2; exit 1; }
for c in ip:iproute2 python3:python3; do
  command -v "${c%%:*}" >/dev/null || { echo "needs ${c##*:} (apt-get install ${c##*:})" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
  echo "== building sluice (release)"
  cargo build --release --quiet --features dpdk --bin sluice
fi
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 1; }

ID=sk$$
OUT=${OUT:-/tmp/sluice-soak-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
STATE=$OUT/state
# A fresh state: a flow snapshot left by an earlier run would be restored.
rm -rf "$STATE"
mkdir -p "$STATE"
DRIVER=
cleanup() {
  set +e
  if [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null; then
    kill -TERM "$DRIVER" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$DRIVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DRIVER" 2>/dev/null
  fi
  # Kills whatever still runs inside the namespaces, then removes them.
  "$ROOT/scripts/netlab.sh" down "$ID"
  rm -f "$STATE/sluice.sock"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== lab sl-$ID-*: 4 backends, 2 clients; results in $OUT"
"$ROOT/scripts/netlab.sh" up "$ID" 4 2
set +e
python3 "$ROOT/scripts/soak.py" --lab "$ID" --bin "$BIN" --state "$STATE" --out "$OUT" \
  --minutes "$MINUTES" "${EXTRA[@]}" &
DRIVER=$!
wait "$DRIVER"
RC=$?
DRIVER=
set -e
exit "$RC"
