#!/usr/bin/env bash
# Time without service across `kill -9` and a restart of sluice (S4a: the
# new instance starts with the same configuration and no flow snapshot),
# phase by phase, on each port kind. Run as root:
#
#   scripts/bench_restart.sh [-n REPS=5] [--kinds afp,dafp,dxdp[,afpkept]]
#                            [--interval-ms 100] [--flow-capacity N]
#                            [--bin LABEL=PATH]...
#                            [--no-build] [--out DIR]
#
# One client keeps a single HTTP/1.1 connection through the VIP and sends
# a request every --interval-ms (scripts/lab_conn.py); two backends run
# examples/lab_http. Each repetition, once the connection has answered for
# a second, sluice gets SIGKILL; as soon as the process is gone (as a
# supervisor would see it) the same binary starts again. Measured, each
# on the clock of the machine:
#   gone       SIGKILL -> the process reaped (the kernel's teardown)
#   ports      exec -> ports open      (sluice's log, "ports open")
#   ready      exec -> control socket ready (sluice's log)
#   forward    exec -> the first packet of the connection reaches a backend
#              (tcpdump on the backends)
#   answer     SIGKILL -> the first answer the client gets afterwards
#   gap        the longest time between two answers on the connection (the
#              service interruption as the client sees it; the request
#              interval is its floor)
# and sluice's neighbor_unresolved drops after the restart. Kind afpkept is
# the AF_PACKET port under scripts/lab_supervisor.py (what systemd does
# with FileDescriptorStoreMax= and Restart=always): SIGKILL goes to sluice,
# the supervisor restarts it at once and hands back the sockets it kept. The connection
# must survive every restart (no error, same backend).
#
# --bin LABEL=PATH adds a binary (e.g. a previous build) measured in the
# same run, repetition by repetition alternating with this one. Results:
# raw.jsonl and the summary in --out (default /tmp/sluice-restart-<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND_LINE="$0 $*"
REPS=5
KINDS=afp,dafp,dxdp
INTERVAL=100
FLOWCAP=
BUILD=1
OUT=
BINS=()
usage() { sed -n '2,31p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--reps) REPS=${2:?}; shift ;;
    --kinds) KINDS=${2:?}; shift ;;
    --interval-ms) INTERVAL=${2:?}; shift ;;
    --flow-capacity) FLOWCAP=${2:?}; shift ;;
    --bin) BINS+=("${2:?}"); shift ;;
    --no-build) BUILD=0 ;;
    --out) OUT=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark creates network namespaces" >&2; exit 1; }
for c in ip:iproute2 python3:python3 tcpdump:tcpdump; do
  command -v "${c%%:*}" >/dev/null || { echo "needs ${c##*:} (apt-get install ${c##*:})" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
  echo "== building sluice and the lab HTTP server (release, dpdk)"
  cargo build --release --quiet --features dpdk --bin sluice --example lab_http
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HTTPD=$TARGET/release/examples/lab_http
[ -x "$HTTPD" ] || { echo "no $HTTPD: cargo build --release --example lab_http" >&2; exit 1; }
declare -A BIN=()
LABELS=()
add_bin() {
  [ -x "$2" ] || { echo "--bin $1=$2: not an executable" >&2; exit 2; }
  [ -n "${BIN[$1]:-}" ] || LABELS+=("$1")
  BIN[$1]=$2
}
[ -x "$TARGET/release/sluice" ] && add_bin sluice "$TARGET/release/sluice"
for b in "${BINS[@]}"; do add_bin "${b%%=*}" "${b#*=}"; done

ID=rs$$
P=sl-$ID
VIP=198.18.0.100
OUT=${OUT:-/tmp/sluice-restart-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.jsonl
: >"$RAW"
STATE=$(mktemp -d "/tmp/sluice-$ID.XXXX")
PIDS=()
SLUICE=
stop() { # pid: TERM, wait 3 s, KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [ -z "$SLUICE" ] || stop "$SLUICE"
  for p in "${PIDS[@]}"; do stop "$p"; done
  "$ROOT/scripts/netlab.sh" down "$ID"
  rm -rf "$STATE" /var/run/dpdk/"$ID"* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/scripts/netlab.sh" up "$ID" 2 1
for i in 1 2; do
  ip netns exec "$P-b$i" "$HTTPD" "b$i" "10.200.2.$((10 + i)):8080" 16 >"$OUT/http-b$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 0.3

config() { # KIND -> $STATE/sluice.toml
  local kind=$1 if0 if1 mac0="" mac1="" backend=dpdk eal=""
  case $kind in
    afp|afpkept) backend=afpacket if0=l0 if1=l1 ;;
    dafp) if0="net_af_packet0,iface=l0,qpairs=1,qdisc_bypass=1" if1="net_af_packet1,iface=l1,qpairs=1,qdisc_bypass=1" ;;
    dxdp) if0="net_af_xdp0,iface=l0,start_queue=0,queue_count=1" if1="net_af_xdp1,iface=l1,start_queue=0,queue_count=1" ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
  esac
  if [ "$backend" = dpdk ]; then
    mac0='mac = "02:00:00:00:01:fe"'
    mac1='mac = "02:00:00:00:02:fe"'
    eal="eal_args = [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--file-prefix\", \"$ID-$kind\", \"-l\", \"0\"]"
  fi
  cat >"$STATE/sluice.toml" <<TOML
[control]
socket = "$STATE/sluice.sock"
flow_state = ""

[dataplane]
backend = "$backend"
workers = 1
${FLOWCAP:+flow_capacity = $FLOWCAP}
$eal

[[interface]]
name = "$if0"
address = "10.200.1.254/24"
$mac0

[[interface]]
name = "$if1"
address = "10.200.2.254/24"
$mac1

[[service]]
name = "web"
vip = "$VIP"
port = 80
protocol = "tcp"

[[service.endpoint]]
address = "10.200.2.11"
port = 8080

[[service.endpoint]]
address = "10.200.2.12"
port = 8080
TOML
}

start_sluice() { # LABEL LOG [KIND]
  if [ "${3:-}" = afpkept ]; then
    # Under the lab's stand-in for systemd: it keeps the AF_PACKET sockets
    # sluice stores with it and restarts sluice at once when it dies.
    rm -f "$STATE/pid"
    ip netns exec "$P-lb" env RUST_LOG=info python3 "$ROOT/scripts/lab_supervisor.py" \
      --pidfile "$STATE/pid" -- "${BIN[$1]}" run --config "$STATE/sluice.toml" >>"$2" 2>&1 &
    SLUICE=$!
    for _ in $(seq 1 100); do [ -s "$STATE/pid" ] && break; sleep 0.02; done
    return
  fi
  ip netns exec "$P-lb" env RUST_LOG=info "${BIN[$1]}" run --config "$STATE/sluice.toml" >>"$2" 2>&1 &
  SLUICE=$!
}

# one LABEL KIND REP
one() {
  local label=$1 kind=$2 rep=$3 log=$OUT/sluice-$1-$2-$3.log conn=$STATE/conn.jsonl caps=() p
  config "$kind"
  rm -f "$STATE/sluice.sock" "$STATE"/*.neighbors "$STATE"/*.pcap
  # DPDK's PMDs leave their interfaces down when they stop.
  ip netns exec "$P-lb" ip link set l0 up
  ip netns exec "$P-lb" ip link set l1 up
  : >"$log"
  start_sluice "$label" "$log" "$kind"
  for _ in $(seq 1 100); do [ -S "$STATE/sluice.sock" ] && break; sleep 0.05; done
  # Warm: the client resolves the VIP, sluice learns the client and the
  # backends.
  for _ in $(seq 1 50); do
    ip netns exec "$P-c1" python3 "$ROOT/scripts/lab_client.py" "$VIP" 80 2 --timeout 0.5 2>/dev/null |
      grep -q '"errors": 0' && break
    sleep 0.1
  done
  for i in 1 2; do
    ip netns exec "$P-b$i" tcpdump --immediate-mode -i b0 -n -s 96 --time-stamp-precision=nano \
      -w "$STATE/b$i.pcap" 'tcp and src host 10.200.1.11' 2>"$STATE/cap-b$i.log" &
    caps+=($!)
  done
  for i in 1 2; do
    for _ in $(seq 1 50); do grep -q "listening on" "$STATE/cap-b$i.log" && break; sleep 0.1; done
  done
  ip netns exec "$P-c1" python3 "$ROOT/scripts/lab_conn.py" "$VIP" 80 4 \
    --interval "$(python3 -c "print($INTERVAL / 1000)")" --timeout 10 >"$conn" 2>&1 &
  local client=$!
  sleep 1.2
  local t_kill t_gone t_exec
  if [ "$kind" = afpkept ]; then
    # The supervisor reaps and restarts: "gone" and "exec" are both the
    # moment it has started the new process.
    local old
    old=$(cat "$STATE/pid")
    t_kill=$(date +%s.%N)
    kill -KILL "$old"
    while [ "$(cat "$STATE/pid" 2>/dev/null)" = "$old" ]; do sleep 0.001; done
    t_gone=$(date +%s.%N)
    t_exec=$t_gone
    wait "$client" || true
    # The new process's lines, for the phases.
    python3 - "$log" "$t_kill" >"$log.2" <<'PY'
import sys, datetime, re
t_kill = float(sys.argv[2])
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", re.sub(r"\x1b\[[0-9;]*m", "", line))
    if m and datetime.datetime.fromisoformat(m.group(1) + "+00:00").timestamp() > t_kill:
        sys.stdout.write(line)
PY
  else
    t_kill=$(date +%s.%N)
    kill -KILL "$SLUICE"
    wait "$SLUICE" 2>/dev/null || true
    t_gone=$(date +%s.%N)
    start_sluice "$label" "$log.2"
    t_exec=$(date +%s.%N)
    wait "$client" || true
  fi
  for p in "${caps[@]}"; do kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  local stats
  stats=$("${BIN[$label]}" ctl --socket "$STATE/sluice.sock" --json stats 2>/dev/null || echo '{}')
  stop "$SLUICE"
  SLUICE=
  python3 "$ROOT/scripts/bench_restart_summary.py" record --label "$label" --kind "$kind" --rep "$rep" \
    --kill "$t_kill" --gone "$t_gone" --exec "$t_exec" --log "$log.2" --conn "$conn" \
    --stats "$stats" "$STATE"/b*.pcap | tee -a "$RAW" | python3 "$ROOT/scripts/bench_restart_summary.py" line
}

python3 -c 'import json,sys; print(json.dumps({"kind": "run", "command": sys.argv[1], "start": sys.argv[2], "interval_ms": float(sys.argv[3]), "kernel": sys.argv[4], "commit": sys.argv[5]}))' \
  "$COMMAND_LINE" "$(date -Iseconds)" "$INTERVAL" "$(uname -r)" \
  "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" >>"$RAW"
for kind in ${KINDS//,/ }; do
  for rep in $(seq 1 "$REPS"); do
    for label in "${LABELS[@]}"; do
      echo "== $label $kind #$rep"
      one "$label" "$kind" "$rep"
    done
  done
done
echo
python3 "$ROOT/scripts/bench_restart_summary.py" summary "$RAW" | tee "$OUT/summary.txt"
