#!/usr/bin/env bash
# What the idle back-off costs in latency: round-trip times of requests on
# one kept-alive connection through sluice (AF_PACKET port), with busy
# polling and with the back-off, in the same run on the same lab. Root.
#
#   scripts/bench_idle_latency.sh [COUNT=500] [GAP_MS=5]
#
# GAP_MS between requests lets the workers go idle (and, with the back-off,
# sleep) before each request, which is the case the back-off makes slower.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-500}
GAP=${2:-5}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/sluice
ID=lat$$
STATE=$(mktemp -d /tmp/sluice-$ID.XXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  scripts/netlab.sh down "$ID"
  rm -rf "$STATE"
}
trap cleanup EXIT
scripts/netlab.sh up "$ID" 1 1
ip netns exec "sl-$ID-b1" python3 scripts/lab_server.py b1 10.200.2.11 8080 >"$STATE/b1.log" 2>&1 &
PIDS+=($!)
for mode in '{ mode = "busy" }' '{ mode = "backoff", spin_polls = 2000, sleep_us = 50 }'; do
  cat > "$STATE/s.toml" <<TOML
[control]
socket = "$STATE/s.sock"
[dataplane]
backend = "afpacket"
workers = 1
idle = $mode
[[interface]]
name = "l0"
address = "10.200.1.254/24"
[[interface]]
name = "l1"
address = "10.200.2.254/24"
[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"
[[service.endpoint]]
address = "10.200.2.11"
port = 8080
TOML
  ip netns exec "sl-$ID-lb" "$BIN" run --config "$STATE/s.toml" >"$STATE/sluice.log" 2>&1 &
  SP=$!
  for _ in $(seq 1 100); do [ -S "$STATE/s.sock" ] && break; sleep 0.1; done
  # Warm up (ARP, flows), then measure.
  ip netns exec "sl-$ID-c1" python3 scripts/lab_rtt.py 198.18.0.100 80 50 >/dev/null
  printf '%-60s ' "idle = $mode"
  ip netns exec "sl-$ID-c1" python3 scripts/lab_rtt.py 198.18.0.100 80 "$COUNT" --gap-ms "$GAP"
  kill "$SP"; wait "$SP" 2>/dev/null || true
done
