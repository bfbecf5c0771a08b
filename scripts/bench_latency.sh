#!/usr/bin/env bash
# One-hop latency and connection rates through a load balancer, sluice on
# each of its port kinds against the kernel (Linux forwarding and nftables
# DNAT as kube-proxy writes it), in one run on one lab. Run as root:
#
#   scripts/bench_latency.sh [-r ROUNDS=3] [-n CONNS=500] [--gap-ms G=5]
#                            [-d SECONDS=5] [--workers N=1] [--cores LIST]
#                            [--idle '{ mode = "busy" }']
#                            [--bin LABEL=PATH]... [--only DUT,...]
#                            [--no-build] [--out DIR]
#
#   client c1 (c0) --[bridge]-- l0 [ lb: device under test ] l1 --[bridge]-- b0 (b1, b2)
#
# Devices under test, each round in this order (so rounds pair them up):
#   fwd          Linux IP forwarding in lb; the client connects to b1's own
#                address (no DNAT): the kernel's floor for one routed hop
#   nft          nftables DNAT of the VIP to the backends with conntrack, the
#                rules kube-proxy's nftables mode writes (numgen random)
#   LABEL-afp    sluice, its AF_PACKET port
#   LABEL-dafp   sluice, DPDK port over net_af_packet vdevs
#   LABEL-dxdp   sluice, DPDK port over net_af_xdp vdevs
# LABEL is "sluice" for the binary built here; --bin LABEL=PATH adds (or,
# for "sluice", replaces) a binary, e.g. --bin main=/tmp/main/sluice to
# compare a previous build in the same run. --only keeps the DUTs whose
# names start with one of the given prefixes. DUT_WRAP="chrt -f 1" (any
# command that execs its arguments) runs sluice under it.
#
# For each DUT, with one worker polling under the default idle back-off
# (or --idle, a dataplane.idle value):
#   hop    CONNS sequential connections (GAP ms apart, so the balancer goes
#          idle between them, as it does for a lightly loaded service), each
#          a GET with Connection: close; tcpdump on the client's c0 and every
#          backend's b0 records the SYNs and SYN-ACKs with the kernel's
#          nanosecond timestamps (one clock for all namespaces). One hop is
#          the time from the client's SYN leaving c0 to the same SYN (same
#          client port and ISN) reaching b0, and the SYN-ACK the other way,
#          matched by client port and acknowledged ISN, so it holds across
#          the DNAT. Both include the two veths and bridge on the path,
#          which every DUT shares.
#   seq    new connections per second from one client, one at a time:
#          wrk -t1 -c1 -H "Connection: close" for SECONDS
#   conc   the same with 8 concurrent connections: wrk -t2 -c8
# The backends run examples/lab_http.rs (a small threaded HTTP server): the
# Python lab server would be the bottleneck of every DUT alike.
#
# Output: a results directory (default /tmp/sluice-latbench-<time>) with
# raw.jsonl (one record per measurement), the captures of the last round,
# the DUT logs, and the summary table (scripts/bench_latency_summary.py).
# Everything the script creates is removed on exit, Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND_LINE="$0 $*"

REPS=3
CONNS=500
GAP=5
DUR=5
WORKERS=1
CORES=
IDLE=
BUILD=1
OUT=
ONLY=
BINS=()
usage() { sed -n '2,51p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--reps) REPS=${2:?}; shift ;;
    -n|--conns) CONNS=${2:?}; shift ;;
    --gap-ms) GAP=${2:?}; shift ;;
    -d|--duration) DUR=${2:?}; shift ;;
    --workers) WORKERS=${2:?}; shift ;;
    --cores) CORES=${2:?}; shift ;;
    --idle) IDLE=${2:?}; shift ;;
    --bin) BINS+=("${2:?}"); shift ;;
    --only) ONLY=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --out) OUT=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark creates network namespaces" >&2; exit 1; }

# --- dependencies ----------------------------------------------------------
need=()
for c in ip:iproute2 ethtool:ethtool nft:nftables python3:python3 tcpdump:tcpdump wrk:wrk \
  conntrack:conntrack pkg-config:pkg-config; do
  command -v "${c%%:*}" >/dev/null || need+=("${c##*:}")
done
for p in dpdk libdpdk-dev libclang-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$BUILD" = 1 ]; then
  echo "== building sluice and the lab HTTP server (release, dpdk)"
  cargo build --release --quiet --features dpdk --bin sluice --example lab_http
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HTTPD=$TARGET/release/examples/lab_http
[ -x "$HTTPD" ] || { echo "no lab HTTP server at $HTTPD: cargo build --release --example lab_http" >&2; exit 1; }
declare -A BIN=()
LABELS=()
add_bin() { # LABEL PATH
  [ -x "$2" ] || { echo "--bin $1=$2: not an executable" >&2; exit 2; }
  [ -n "${BIN[$1]:-}" ] || LABELS+=("$1")
  BIN[$1]=$2
}
[ -x "$TARGET/release/sluice" ] && add_bin sluice "$TARGET/release/sluice"
for b in "${BINS[@]}"; do add_bin "${b%%=*}" "${b#*=}"; done
[ ${#LABELS[@]} -gt 0 ] || { echo "no sluice binary: build it or pass --bin LABEL=PATH" >&2; exit 1; }

# --- lab ---------------------------------------------------------------------
ID=lt$$
P=sl-$ID
NS_C=$P-c1
NS_LB=$P-lb
NBACK=2
VIP=198.18.0.100
OUT=${OUT:-/tmp/sluice-latbench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.jsonl
: >"$RAW"
STATE=$(mktemp -d "/tmp/sluice-$ID.XXXX")
nsx() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

DUT_PID=
CAP_PIDS=()
SERVER_PIDS=()
stop_pid() { # pid [signal]: signal, wait up to 5 s, then SIGKILL
  local pid=$1 sig=${2:-TERM}
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  for p in "${CAP_PIDS[@]}"; do stop_pid "$p" INT; done
  stop_pid "$DUT_PID"
  for p in "${SERVER_PIDS[@]}"; do stop_pid "$p"; done
  "$ROOT/scripts/netlab.sh" down "$ID"
  rm -rf "$STATE" "/var/run/dpdk/$ID"-* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== lab $ID: 1 client, $NBACK backends, results in $OUT"
"$ROOT/scripts/netlab.sh" up "$ID" "$NBACK" 1
# Linux forwarding reaches the backends by their own addresses.
nsx "$NS_C" ip route add 10.200.2.0/24 via 10.200.1.254
for i in $(seq 1 "$NBACK"); do
  ip netns exec "$P-b$i" "$HTTPD" "b$i" "10.200.2.$((10 + i)):8080" 16 >"$OUT/http-b$i.log" 2>&1 &
  SERVER_PIDS+=($!)
done
for i in $(seq 1 "$NBACK"); do
  for _ in $(seq 1 50); do grep -q listening "$OUT/http-b$i.log" && break; sleep 0.1; done
  grep -q listening "$OUT/http-b$i.log" || { echo "backend b$i did not start:"; cat "$OUT/http-b$i.log"; exit 1; }
done

# The lb namespace as the kernel's own router (addresses, forwarding) or as
# sluice's (no address, no forwarding, nothing for the kernel to answer).
lb_kernel() {
  nsx "$NS_LB" ip addr add 10.200.1.254/24 dev l0
  nsx "$NS_LB" ip addr add 10.200.2.254/24 dev l1
  nsx "$NS_LB" sysctl -qw net.ipv4.ip_forward=1
}
lb_bare() {
  nsx "$NS_LB" nft flush ruleset
  nsx "$NS_LB" ip addr flush dev l0
  nsx "$NS_LB" ip addr flush dev l1
  nsx "$NS_LB" sysctl -qw net.ipv4.ip_forward=0
  nsx "$NS_LB" conntrack -F >/dev/null 2>&1 || true
  # DPDK's PMDs take their interfaces down when they stop.
  nsx "$NS_LB" ip link set l0 up promisc off
  nsx "$NS_LB" ip link set l1 up promisc off
}
nft_rules() { # the rules kube-proxy's nftables mode writes for one service
  local n=$NBACK map="" eps="" i
  for i in $(seq 0 $((n - 1))); do
    map="$map${map:+, }$i : goto svc-ep-$i"
    eps="$eps
  chain svc-ep-$i { meta l4proto tcp dnat to 10.200.2.$((11 + i)):8080; }"
  done
  nsx "$NS_LB" nft -f - <<NFT
table ip kube-proxy {
  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;
    elements = { $VIP . tcp . 80 : goto svc-vip } }
  chain svc-vip { numgen random mod $n vmap { $map }; }
  $eps
  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
  chain filter-forward { type filter hook forward priority filter; policy accept; ct state invalid drop; }
  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; }
}
NFT
}

sluice_config() { # KIND(afp|dafp|dxdp) -> writes $STATE/sluice.toml
  local kind=$1 if0 if1 mac0="" mac1="" backend=dpdk eal=""
  case $kind in
    afp) backend=afpacket if0=l0 if1=l1 ;;
    dafp)
      if0="net_af_packet0,iface=l0,qpairs=$WORKERS,qdisc_bypass=1"
      if1="net_af_packet1,iface=l1,qpairs=$WORKERS,qdisc_bypass=1" ;;
    dxdp)
      if0="net_af_xdp0,iface=l0,start_queue=0,queue_count=$WORKERS"
      if1="net_af_xdp1,iface=l1,start_queue=0,queue_count=$WORKERS" ;;
  esac
  if [ "$backend" = dpdk ]; then
    mac0='mac = "02:00:00:00:01:fe"'
    mac1='mac = "02:00:00:00:02:fe"'
    eal="eal_args = [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--file-prefix\", \"$ID-$kind\", \"-l\", \"0\"]"
  fi
  {
    printf '[control]\nsocket = "%s/sluice.sock"\nflow_state = ""\n\n' "$STATE"
    printf '[dataplane]\nbackend = "%s"\nworkers = %s\n%s\n' "$backend" "$WORKERS" "$eal"
    [ -z "$CORES" ] || printf 'cores = [%s]\n' "$CORES"
    [ -z "$IDLE" ] || printf 'idle = %s\n' "$IDLE"
    printf '\n[[interface]]\nname = "%s"\naddress = "10.200.1.254/24"\n%s\n' "$if0" "$mac0"
    printf '\n[[interface]]\nname = "%s"\naddress = "10.200.2.254/24"\n%s\n' "$if1" "$mac1"
    printf '\n[[service]]\nname = "web"\nvip = "%s"\nport = 80\nprotocol = "tcp"\n' "$VIP"
    for i in $(seq 1 "$NBACK"); do
      printf '\n[[service.endpoint]]\naddress = "10.200.2.%s"\nport = 8080\n' $((10 + i))
    done
  } >"$STATE/sluice.toml"
}

# ready URL_HOST PORT: a few requests succeed (ARP learnt, backends resolved)
ready() {
  local r
  for _ in $(seq 1 50); do
    r=$(nsx "$NS_C" python3 "$ROOT/scripts/lab_client.py" "$1" "$2" 3 --timeout 0.5 2>/dev/null || true)
    case $r in *'"errors": 0'*) return 0 ;; esac
    sleep 0.2
  done
  echo "   no answer through $1:$2 after 10 s"
  return 1
}

start_dut() { # DUT: set lb up; leaves DUT_PID set for sluice
  local dut=$1 label kind
  lb_bare
  case $dut in
    fwd) lb_kernel ;;
    nft) lb_kernel; nft_rules ;;
    *)
      label=${dut%-*} kind=${dut##*-}
      sluice_config "$kind"
      rm -f "$STATE/sluice.sock"
      ip netns exec "$NS_LB" ${DUT_WRAP:-} env RUST_LOG=info "${BIN[$label]}" run --config "$STATE/sluice.toml" \
        >"$OUT/$dut.log" 2>&1 &
      DUT_PID=$!
      for _ in $(seq 1 100); do
        [ -S "$STATE/sluice.sock" ] && break
        kill -0 "$DUT_PID" 2>/dev/null || break
        sleep 0.05
      done
      [ -S "$STATE/sluice.sock" ] || { echo "   $dut did not start:"; tail -5 "$OUT/$dut.log"; return 1; }
      ;;
  esac
}
stop_dut() {
  stop_pid "$DUT_PID" TERM
  DUT_PID=
}

# A fresh client address for every DUT and round. The backends keep the
# TIME_WAIT of every connection they closed for 60 s; a later DUT's SYN on
# the same 4-tuple, with a TCP timestamp from another clock offset (the
# kernel derives it from the destination, the VIP or the backend), can be
# refused by PAWS and wait a 1 s retransmission: one DUT's run would slow
# the next one down.
CLIENT_N=0
fresh_client() {
  local a
  CLIENT_N=$((CLIENT_N + 1))
  a=10.200.1.$((99 + CLIENT_N))
  [ "$CLIENT_N" -le 150 ] || { echo "out of client addresses" >&2; return 1; }
  nsx "$NS_C" ip addr add "$a/24" dev c0
  nsx "$NS_C" ip route replace 198.18.0.0/15 via 10.200.1.254 src "$a"
  nsx "$NS_C" ip route replace 10.200.2.0/24 via 10.200.1.254 src "$a"
}

target_of() { # DUT -> "HOST PORT" the client connects to
  if [ "$1" = fwd ]; then echo "10.200.2.11 8080"; else echo "$VIP 80"; fi
}

# hop DUT ROUND: captures around CONNS sequential connections
hop() {
  local dut=$1 round=$2 host port caps=() p i
  read -r host port < <(target_of "$dut")
  rm -f "$STATE"/*.pcap
  # `ip netns exec` directly (not the nsx function) so that $! is tcpdump
  # itself, which must get the SIGINT that makes it flush its file.
  ip netns exec "$NS_C" tcpdump --immediate-mode -i c0 -n -s 128 -B 8192 --time-stamp-precision=nano -w "$STATE/c.pcap" \
    'tcp[13] & 2 != 0' 2>"$STATE/cap-c.log" &
  CAP_PIDS+=($!)
  for i in $(seq 1 "$NBACK"); do
    ip netns exec "$P-b$i" tcpdump --immediate-mode -i b0 -n -s 128 -B 8192 --time-stamp-precision=nano -w "$STATE/b$i.pcap" \
      'tcp[13] & 2 != 0' 2>"$STATE/cap-b$i.log" &
    CAP_PIDS+=($!)
  done
  for f in "$STATE"/cap-*.log; do
    for _ in $(seq 1 50); do grep -q "listening on" "$f" && break; sleep 0.1; done
  done
  local r
  r=$(nsx "$NS_C" python3 "$ROOT/scripts/lab_client.py" "$host" "$port" "$CONNS" --gap-ms "$GAP" --timeout 2)
  sleep 0.5
  for p in "${CAP_PIDS[@]}"; do stop_pid "$p" INT; done
  CAP_PIDS=()
  python3 "$ROOT/scripts/bench_latency_summary.py" hops --dut "$dut" --round "$round" \
    --client-result "$r" "$STATE/c.pcap" "$STATE"/b*.pcap >>"$RAW"
  cp "$STATE"/*.pcap "$OUT/" 2>/dev/null || true
}

# rate DUT ROUND NAME THREADS CONNS
rate() {
  local dut=$1 round=$2 name=$3 t=$4 c=$5 host port out
  read -r host port < <(target_of "$dut")
  out=$(nsx "$NS_C" wrk -t"$t" -c"$c" -d"${DUR}s" -H "Connection: close" "http://$host:$port/" 2>&1 || true)
  printf '%s\n' "$out" >"$OUT/wrk-$dut-$name.$round.log"
  python3 "$ROOT/scripts/bench_latency_summary.py" wrk --dut "$dut" --round "$round" --test "$name" \
    --threads "$t" --conns "$c" --seconds "$DUR" <<<"$out" >>"$RAW"
}

DUTS=(fwd nft)
for l in "${LABELS[@]}"; do DUTS+=("$l-afp" "$l-dafp" "$l-dxdp"); done
if [ -n "$ONLY" ]; then
  kept=()
  for d in "${DUTS[@]}"; do
    for o in ${ONLY//,/ }; do
      case $d in "$o"*) kept+=("$d"); break ;; esac
    done
  done
  DUTS=("${kept[@]}")
fi

python3 - "$COMMAND_LINE" "$(date -Iseconds)" "$REPS" "$CONNS" "$GAP" "$DUR" "$WORKERS" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" "$(uname -r)" "${DUTS[*]}" \
  "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" "$IDLE" >>"$RAW" <<'PY'
import json, sys
a = sys.argv[1:]
print(json.dumps({"kind": "run", "command": a[0], "start": a[1], "reps": int(a[2]), "conns": int(a[3]),
                  "gap_ms": float(a[4]), "seconds": float(a[5]), "workers": int(a[6]), "cpu": a[7],
                  "cpus": int(a[8]), "kernel": a[9], "duts": a[10], "commit": a[11],
                  "idle": a[12] or "default back-off"}))
PY

for round in $(seq 1 "$REPS"); do
  for dut in "${DUTS[@]}"; do
    echo "== round $round/$REPS: $dut"
    fresh_client
    if ! start_dut "$dut"; then
      printf '{"kind": "failed", "dut": "%s", "round": %s}\n' "$dut" "$round" >>"$RAW"
      stop_dut
      continue
    fi
    read -r host port < <(target_of "$dut")
    if ready "$host" "$port"; then
      hop "$dut" "$round"
      rate "$dut" "$round" seq 1 1
      rate "$dut" "$round" conc 2 8
      tail -n 3 "$RAW" | python3 "$ROOT/scripts/bench_latency_summary.py" line
    else
      printf '{"kind": "failed", "dut": "%s", "round": %s}\n' "$dut" "$round" >>"$RAW"
    fi
    if [ -n "$DUT_PID" ]; then
      nsx "$NS_LB" "${BIN[${dut%-*}]}" ctl --socket "$STATE/sluice.sock" --json stats \
        >"$OUT/stats-$dut.$round.json" 2>/dev/null || true
    fi
    stop_dut
  done
done
echo
python3 "$ROOT/scripts/bench_latency_summary.py" summary "$RAW" | tee "$OUT/summary.txt"
