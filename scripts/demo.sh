#!/usr/bin/env bash
# sluice demo: one client, sluice, three HTTP backends, each in its own
# network namespace; 3000 requests on fresh connections through the VIP;
# how many each backend served. Runs as root (re-runs through sudo):
#
#   scripts/demo.sh            # AF_PACKET port (default)
#   scripts/demo.sh --dpdk     # DPDK port over net_af_packet vdevs
#   scripts/demo.sh --ha       # two instances behind a BGP/ECMP router:
#                              # spread, graceful stop, rejoin, kill
#                              # (scripts/demo_ha.sh)
#
# Installs what is missing, builds, and removes everything it created on
# exit, Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=afpacket
REQUESTS=${REQUESTS:-3000}
for a in "$@"; do
  case "$a" in
    --dpdk) MODE=dpdk ;;
    --ha) exec scripts/demo_ha.sh ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  # Namespaces need root: ask sudo when there is one.
  command -v sudo >/dev/null && exec sudo "$0" "$@"
  echo "run as root: the demo creates network namespaces" >&2
  exit 1
fi

if [ "$MODE" = dpdk ]; then scripts/setup.sh --dpdk; else scripts/setup.sh --demo; fi

echo "== building sluice ($MODE)"
if [ "$MODE" = dpdk ]; then
  cargo build --release --quiet --features dpdk
else
  cargo build --release --quiet
fi
BIN=$PWD/target/release/sluice

ID=demo$$
STATE=$(mktemp -d /tmp/sluice-$ID.XXXX)
SOCK=$STATE/sluice.sock
SERVERS=()
cleanup() {
  set +e
  [ -n "${SLUICE_PID:-}" ] && kill "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null
  for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  scripts/netlab.sh down "$ID"
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== lab: namespaces sl-$ID-*"
scripts/netlab.sh up "$ID" 3 1

if [ "$MODE" = dpdk ]; then
  IF0="net_af_packet0,iface=l0,qpairs=1,qdisc_bypass=1"
  IF1="net_af_packet1,iface=l1,qpairs=1,qdisc_bypass=1"
  MAC0='mac = "02:00:00:00:01:fe"'
  MAC1='mac = "02:00:00:00:02:fe"'
  EAL='eal_args = ["--no-huge", "-m", "512", "--no-pci", "--file-prefix", "'$ID'", "-l", "0"]'
else
  IF0=l0; IF1=l1; MAC0=; MAC1=; EAL=
fi
cat > "$STATE/sluice.toml" <<TOML
[control]
socket = "$SOCK"

[dataplane]
backend = "$MODE"
workers = 1
idle = { mode = "backoff", spin_polls = 2000, sleep_us = 50 }
$EAL

[[interface]]
name = "$IF0"
address = "10.200.1.254/24"
$MAC0

[[interface]]
name = "$IF1"
address = "10.200.2.254/24"
$MAC1

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"

[[service.endpoint]]
address = "10.200.2.11"
port = 8080

[[service.endpoint]]
address = "10.200.2.12"
port = 8080

[[service.endpoint]]
address = "10.200.2.13"
port = 8080
TOML

for i in 1 2 3; do
  mkdir -p "$STATE/www$i"
  echo "b$i" > "$STATE/www$i/who"
  ip netns exec "sl-$ID-b$i" python3 -m http.server 8080 --bind "10.200.2.1$i" \
    --directory "$STATE/www$i" >"$STATE/b$i.log" 2>&1 &
  SERVERS+=($!)
done

echo "== starting sluice in sl-$ID-lb"
RUST_LOG=${RUST_LOG:-info} ip netns exec "sl-$ID-lb" "$BIN" run --config "$STATE/sluice.toml" >"$STATE/sluice.log" 2>&1 &
SLUICE_PID=$!
for _ in $(seq 1 100); do
  [ -S "$SOCK" ] && break
  kill -0 "$SLUICE_PID" 2>/dev/null || { cat "$STATE/sluice.log"; echo "sluice exited" >&2; exit 1; }
  sleep 0.1
done
[ -S "$SOCK" ] || { cat "$STATE/sluice.log"; echo "sluice did not start" >&2; exit 1; }
# Backends up and resolved (sluice ARPs for them) before the client starts.
for _ in $(seq 1 50); do
  ip netns exec "sl-$ID-c1" python3 scripts/lab_client.py 198.18.0.100 80 3 --timeout 0.5 | grep -q '"errors": 0' && break
  sleep 0.2
done

echo "== $REQUESTS requests, each on a new connection, from sl-$ID-c1 to 198.18.0.100:80"
RESULT=$(ip netns exec "sl-$ID-c1" python3 scripts/lab_client.py 198.18.0.100 80 "$REQUESTS")
python3 - "$RESULT" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
total = r["ok"] + r["errors"]
print(f"{'backend':<10}{'requests':>10}{'share':>9}")
for b in sorted(r["backends"]):
    n = r["backends"][b]
    print(f"{b:<10}{n:>10}{100.0 * n / total:>8.1f}%")
print(f"{'errors':<10}{r['errors']:>10}")
PY
echo "== sluice's view"
"$BIN" ctl --socket "$SOCK" stats || true
