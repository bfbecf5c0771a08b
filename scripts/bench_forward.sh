#!/usr/bin/env bash
# Forwarding throughput of sluice against dpdk-testpmd io forwarding, over
# veth pairs, in one run. Run as root:
#
#   scripts/bench_forward.sh [-r ROUNDS] [-d SECONDS] [--no-xdp] [--syn]
#                            [--no-ceiling] [--dut-cpu N] [--nice N] [--no-build]
#                            [--out DIR]
#
#   gen (trafgen) g0 ==veth== l0 [ lb: device under test ] l1 ==veth== s0 sink
#
# trafgen in namespace gen sends 64-byte UDP frames (and with --syn, TCP SYNs)
# to the VIP 198.18.0.100:80 from 64,512 source ports, addressed to l0's MAC.
# The device under test (DUT) in lb forwards them out of l1; the sink counts
# them on s0 and drops them at netdev ingress. Throughput is the s0 receive
# counter's growth over the measured window (-d, default 10 s, after 2 s of
# warm-up). Each of -r rounds (default 3) starts and measures, in order:
#
#   ceiling      no DUT: frames dropped at lb's l0 ingress (what gen can send)
#   testpmd-afp  dpdk-testpmd --forward-mode=io over net_af_packet vdevs l0<->l1
#   sluice-afp   sluice, backend "dpdk", over the same net_af_packet vdevs
#   sluice-kafp  sluice, backend "afpacket" (its own TPACKET_V2 rings) on l0/l1
#   testpmd-xdp  dpdk-testpmd io over net_af_xdp vdevs   (skip with --no-xdp)
#   sluice-xdp   sluice, backend "dpdk", net_af_xdp vdevs (skip with --no-xdp)
#
# sluice runs one UDP service 198.18.0.100:80 with four backends
# 10.200.2.11-14:8080, all resolved by static neighbors to the sink's MAC, so
# it does the full job (classify, flow table, Maglev, DNAT, MAC rewrite) while
# testpmd only moves buffers: the ratio is the price of that work.
#
# CPU placement (2-core machines): trafgen and the kernel's receive path of l0
# (the copy into the DUT's ring) run on CPU 0; the DUT's polling thread runs
# on --dut-cpu (default 1), its main/control thread on the other core. Both
# DUTs get identical placement, vdev arguments and mbuf budgets. On a machine
# that also runs other jobs, --nice -10 lets generator and DUT win the CPU
# from them (both DUTs alike); the summary shows how much CPU the DUT got.
#
# Output: a results directory (default /tmp/sluice-fwdbench-<time>) with
# raw.jsonl (one record per measured window), DUT logs and the summary table
# printed at the end by scripts/bench_forward_summary.py. Namespaces are
# named fb<PID>-{gen,lb,sink}; everything the script starts or changes
# (processes, namespaces, net.core.wmem_default) is undone on exit, Ctrl-C
# or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND_LINE="$0 $*"

REPS=3
DUR=10
WARM=2
XDP=1
SYN=0
CEILING=1
BUILD=1
DUT_CPU=1
NICE=0
OUT=
usage() { sed -n '2,42p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--reps) REPS=${2:?}; shift ;;
    -d|--duration) DUR=${2:?}; shift ;;
    --warmup) WARM=${2:?}; shift ;;
    --no-xdp) XDP=0 ;;
    --syn) SYN=1 ;;
    --no-ceiling) CEILING=0 ;;
    --dut-cpu) DUT_CPU=${2:?}; shift ;;
    --nice) NICE=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --out) OUT=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark creates network namespaces" >&2; exit 1; }
NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || { echo "needs at least 2 CPUs (generator and DUT poller)" >&2; exit 1; }
[ "$DUT_CPU" -lt "$NCPU" ] || { echo "--dut-cpu $DUT_CPU: this machine has CPUs 0-$((NCPU - 1))" >&2; exit 2; }
GEN_CPU=0 # trafgen -P 1 pins its single sender to CPU 0
# The DUT's non-polling threads (testpmd's main lcore, sluice's control
# thread) go to a core other than the poller's.
if [ "$DUT_CPU" = 0 ]; then MAIN_CPU=1; else MAIN_CPU=0; fi

# --- dependencies --------------------------------------------------------
# Debian 12 ships dpdk-testpmd in dpdk-dev, trafgen in netsniff-ng.
need=()
for c in ip:iproute2 ethtool:ethtool nft:nftables python3:python3 taskset:util-linux \
  trafgen:netsniff-ng dpdk-testpmd:dpdk-dev pkg-config:pkg-config; do
  command -v "${c%%:*}" >/dev/null || need+=("${c##*:}")
done
for p in dpdk libdpdk-dev libclang-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "$BUILD" = 1 ]; then
  echo "== building sluice (release, dpdk)"
  cargo build --release --quiet --features dpdk
fi
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
[ -x "$BIN" ] || { echo "no sluice binary at $BIN (build it, or set SLUICE_BIN)" >&2; exit 1; }

# --- names and addresses -------------------------------------------------
P=fb$$
NS_GEN=$P-gen
NS_LB=$P-lb
NS_SINK=$P-sink
MAC_G0=02:00:00:00:01:01 # must match scripts/trafgen/*.cfg
MAC_L0=02:00:00:00:01:fe # the frames' destination (trafgen/*.cfg)
MAC_L1=02:00:00:00:02:fe
MAC_S0=02:00:00:00:02:01
VIP=198.18.0.100
OUT=${OUT:-/tmp/sluice-fwdbench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW=$OUT/raw.jsonl
: >"$RAW"
# Same ring geometry for testpmd and sluice; qdisc_bypass as trafgen does.
AFP_ARGS=qpairs=1,blocksz=4096,framesz=2048,framecnt=4096,qdisc_bypass=1
XDP_ARGS=start_queue=0,queue_count=1

nsx() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

# --- cleanup ---------------------------------------------------------------
DUT_PID=
GEN_PID=
WMEM_ORIG=
ROUND=0
stop_pid() { # pid [signal]: signal, wait up to 10 s, then SIGKILL
  local pid=$1 sig=${2:-INT}
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
# trafgen forks its senders and they, not the parent, must get SIGINT (the
# parent alone ignores it while they run). Everything in the generator's
# namespace is trafgen, so signal all of it.
stop_gen() {
  local pid
  for pid in $(ip netns pids "$NS_GEN" 2>/dev/null); do kill -INT "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    [ -z "$(ip netns pids "$NS_GEN" 2>/dev/null)" ] && break
    sleep 0.1
  done
  for pid in $(ip netns pids "$NS_GEN" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  [ -z "$GEN_PID" ] || wait "$GEN_PID" 2>/dev/null || true
  GEN_PID=
}
cleanup() {
  set +e
  stop_gen
  stop_pid "$DUT_PID"
  for ns in "$NS_GEN" "$NS_LB" "$NS_SINK"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  [ -n "$WMEM_ORIG" ] && sysctl -qw net.core.wmem_default="$WMEM_ORIG"
  rm -rf "/var/run/dpdk/$P"-* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- topology --------------------------------------------------------------
quiet_link() { # ns ifname: offloads off (sluice's afpacket port wants whole frames), up
  nsx "$1" ethtool -K "$2" gro off gso off tso off lro off tx off rx off >/dev/null 2>&1 || true
  nsx "$1" ip link set "$2" up
}

# Links up and static neighbours. DPDK's af_packet/af_xdp PMDs take the
# interface down when they stop, which flushes permanent neighbours, so this
# runs again after every DUT.
l2() {
  for d in "$NS_GEN g0" "$NS_LB l0" "$NS_LB l1" "$NS_SINK s0"; do
    # shellcheck disable=SC2086
    set -- $d
    nsx "$1" ip link set "$2" up promisc off
  done
  nsx "$NS_GEN" ip neigh replace 10.200.1.254 lladdr $MAC_L0 dev g0 nud permanent
  nsx "$NS_SINK" ip neigh replace 10.200.2.254 lladdr $MAC_L1 dev s0 nud permanent
}

topo_up() {
  for ns in "$NS_GEN" "$NS_LB" "$NS_SINK"; do
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    # IPv6 off before the veths exist, so they never send neighbour discovery.
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  done
  ip link add g0 netns "$NS_GEN" address $MAC_G0 type veth peer name l0 netns "$NS_LB" address $MAC_L0
  ip link add l1 netns "$NS_LB" address $MAC_L1 type veth peer name s0 netns "$NS_SINK" address $MAC_S0
  quiet_link "$NS_GEN" g0
  quiet_link "$NS_LB" l0
  quiet_link "$NS_LB" l1
  quiet_link "$NS_SINK" s0
  nsx "$NS_GEN" ip addr add 10.200.1.1/24 dev g0
  nsx "$NS_GEN" ip route add 198.18.0.0/15 via 10.200.1.254
  nsx "$NS_SINK" ip addr add 10.200.2.1/24 dev s0
  # lb's kernel has no addresses on l0/l1 and no forwarding: the DUT owns
  # them. Its packet taps (AF_PACKET) see frames before netdev ingress and
  # XDP before that, so dropping there keeps the kernel stack from also
  # processing every frame without hiding anything from the DUT.
  nsx "$NS_LB" sysctl -qw net.ipv4.ip_forward=0
  nsx "$NS_LB" nft -f - <<NFT
table netdev dut_only {
  chain l0_in { type filter hook ingress device l0 priority 0; policy drop; }
  chain l1_in { type filter hook ingress device l1 priority 0; policy drop; }
}
NFT
  nsx "$NS_SINK" nft -f - <<NFT
table netdev sink {
  chain s0_in { type filter hook ingress device s0 priority 0; policy drop; }
}
NFT
  # l0's receive path stays on the sender's CPU: no RPS, no threaded NAPI.
  nsx "$NS_LB" sh -c 'echo 0 > /sys/class/net/l0/queues/rx-0/rps_cpus'
  nsx "$NS_LB" sh -c 'echo 0 > /sys/class/net/l0/threaded' 2>/dev/null || true
  l2
}

# --- measurement -------------------------------------------------------------
counters() { # l0_rx s0_rx g0_tx l1_txdrop s0_rx_drop (sysfs is per namespace under ip netns exec)
  echo "$(nsx "$NS_LB" cat /sys/class/net/l0/statistics/rx_packets)" \
    "$(nsx "$NS_SINK" cat /sys/class/net/s0/statistics/rx_packets)" \
    "$(nsx "$NS_GEN" cat /sys/class/net/g0/statistics/tx_packets)" \
    "$(nsx "$NS_LB" cat /sys/class/net/l1/statistics/tx_dropped)" \
    "$(nsx "$NS_SINK" cat /sys/class/net/s0/statistics/rx_dropped)"
}
cpu_ticks() { # per-CPU "user nice system idle iowait irq softirq steal" as a JSON object
  awk 'BEGIN { printf "{" } /^cpu[0-9]/ { printf "%s\"%s\": [%s,%s,%s,%s,%s,%s,%s,%s]", sep, $1, $2, $3, $4, $5, $6, $7, $8, $9; sep = ", " } END { printf "}" }' /proc/stat
}
dut_ticks() { # user+system ticks of the DUT process (all its threads)
  if [ -n "$DUT_PID" ] && [ -r "/proc/$DUT_PID/stat" ]; then
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$DUT_PID/stat"
  else
    echo 0
  fi
}

# measure DUT REP TRAFFIC: one window of $DUR s after $WARM s of warm-up.
measure() {
  local dut=$1 rep=$2 traffic=$3 c0 c1 s0 s1 t0 t1 d0 d1 alive=1
  # setsid: trafgen 0.6.8 signals its whole process group on SIGINT.
  # --no-sock-mem: otherwise it rewrites global socket-memory sysctls.
  setsid ip netns exec "$NS_GEN" nice -n "$NICE" trafgen --no-sock-mem -Q -C -P 1 -o g0 \
    -c "$ROOT/scripts/trafgen/$traffic.cfg" </dev/null >"$OUT/trafgen.log" 2>&1 &
  GEN_PID=$!
  sleep "$WARM"
  c0=$(counters) s0=$(cpu_ticks) d0=$(dut_ticks) t0=$(date +%s.%N)
  sleep "$DUR"
  c1=$(counters) s1=$(cpu_ticks) d1=$(dut_ticks) t1=$(date +%s.%N)
  kill -0 "$GEN_PID" 2>/dev/null || alive=0
  stop_gen
  [ "$alive" = 1 ] || { echo "   trafgen died during the window:"; sed 's/^/   | /' "$OUT/trafgen.log"; }
  printf '{"kind": "window", "dut": "%s", "traffic": "%s", "rep": %s, "t0": %s, "t1": %s, "ctr0": [%s], "ctr1": [%s], "cpu0": %s, "cpu1": %s, "dut_ticks": [%s, %s], "clk_tck": %s, "gen_cpu": %s, "dut_cpu": %s, "gen_alive": %s, "loadavg1": %s}\n' \
    "$dut" "$traffic" "$rep" "$t0" "$t1" "${c0// /, }" "${c1// /, }" "$s0" "$s1" "$d0" "$d1" \
    "$(getconf CLK_TCK)" "$GEN_CPU" "$DUT_CPU" "$alive" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW"
  tail -n 1 "$RAW" | python3 "$ROOT/scripts/bench_forward_summary.py" --line
}

traffics() {
  echo udp64
  [ "$SYN" = 0 ] || echo syn64
}

measure_all() { # DUT: one window per traffic, in round $ROUND
  local t
  for t in $(traffics); do measure "$1" "$ROUND" "$t"; done
}

# --- devices under test --------------------------------------------------------
wait_for_log() { # pid log pattern seconds
  local pid=$1 log=$2 pat=$3 secs=$4
  for _ in $(seq 1 $((secs * 10))); do
    grep -q "$pat" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# testpmd NAME VDEV_KIND(af_packet|af_xdp)
testpmd() {
  local name=$1 kind=$2 args log=$OUT/$1.$ROUND.log
  if [ "$kind" = af_packet ]; then args=$AFP_ARGS; else args=$XDP_ARGS; fi
  echo "== $name: dpdk-testpmd io forwarding, net_${kind} vdevs, poller on CPU $DUT_CPU"
  # lcore 0 = main (stats printer, sleeps), lcore 1 = the forwarding poller.
  # --stats-period keeps testpmd running without a terminal on stdin.
  setsid ip netns exec "$NS_LB" nice -n "$NICE" dpdk-testpmd --lcores "0@$MAIN_CPU,1@$DUT_CPU" --main-lcore 0 \
    --no-huge -m 1024 --no-pci --file-prefix "$P-$name" \
    --vdev="net_${kind}0,iface=l0,$args" --vdev="net_${kind}1,iface=l1,$args" \
    -- --forward-mode=io --auto-start --stats-period 5 --nb-cores=1 --rxq=1 --txq=1 \
    --total-num-mbufs=16384 --txd=1024 --rxd=1024 </dev/null >"$log" 2>&1 &
  DUT_PID=$!
  if ! wait_for_log "$DUT_PID" "$log" "Start automatic packet forwarding\|packet forwarding - ports" 30; then
    echo "   $name did not start; last lines of $log:"
    tail -n 15 "$log" | sed 's/^/   | /'
    printf '{"kind": "failed", "dut": "%s", "round": %s, "why": "did not start (see %s)"}\n' "$name" "$ROUND" "$log" >>"$RAW"
    stop_pid "$DUT_PID"
    DUT_PID=
    l2
    return 0
  fi
  sleep 1
  l2
  measure_all "$name"
  stop_pid "$DUT_PID"
  DUT_PID=
  l2
}

sluice_config() { # BACKEND IF0 IF1 EAL_LINE SOCKET
  local backend=$1 if0=$2 if1=$3 eal=$4 sock=$5 b
  cat <<TOML
[control]
socket = "$sock"

[dataplane]
backend = "$backend"
workers = 1
cores = [$DUT_CPU]
idle = { mode = "busy" }
$eal

[[interface]]
name = "$if0"
mac = "$MAC_L0"
address = "10.200.1.254/24"

[[interface]]
name = "$if1"
mac = "$MAC_L1"
address = "10.200.2.254/24"

[network]
neighbors = [
  { ip = "10.200.1.1", mac = "$MAC_G0" },
TOML
  for b in 11 12 13 14; do echo "  { ip = \"10.200.2.$b\", mac = \"$MAC_S0\" },"; done
  echo "]"
  for proto in udp $([ "$SYN" = 0 ] || echo tcp); do
    cat <<TOML

[[service]]
name = "bench-$proto"
vip = "$VIP"
port = 80
protocol = "$proto"
TOML
    for b in 11 12 13 14; do
      printf '\n[[service.endpoint]]\naddress = "10.200.2.%s"\nport = 8080\n' "$b"
    done
  done
}

sluice_stats() { # NAME SOCKET WHEN
  local js
  if js=$("$BIN" ctl --socket "$2" --json stats 2>&1); then
    printf '{"kind": "stats", "dut": "%s", "round": %s, "when": "%s", "stats": %s}\n' "$1" "$ROUND" "$3" "$js" >>"$RAW"
  else
    echo "   sluice ctl stats failed: $js"
  fi
}

# sluice NAME BACKEND(dpdk|afpacket) [VDEV_KIND]
sluice() {
  local name=$1 backend=$2 kind=${3:-} log=$OUT/$1.$ROUND.log conf=$OUT/$1.toml sock=$OUT/$1.sock
  local if0=l0 if1=l1 eal='' args
  if [ "$backend" = dpdk ]; then
    if [ "$kind" = af_packet ]; then args=$AFP_ARGS; else args=$XDP_ARGS; fi
    if0="net_${kind}0,iface=l0,$args"
    if1="net_${kind}1,iface=l1,$args"
    eal="eal_args = [\"--no-huge\", \"-m\", \"1024\", \"--no-pci\", \"--file-prefix\", \"$P-$name\", \"-l\", \"$MAIN_CPU\"]"
    echo "== $name: sluice, backend dpdk, net_${kind} vdevs, worker on CPU $DUT_CPU"
  else
    echo "== $name: sluice, backend afpacket on l0/l1, worker on CPU $DUT_CPU"
  fi
  sluice_config "$backend" "$if0" "$if1" "$eal" "$sock" >"$conf"
  rm -f "$sock"
  # The process starts on MAIN_CPU (control thread); the worker pins itself.
  setsid ip netns exec "$NS_LB" nice -n "$NICE" taskset -c "$MAIN_CPU" env RUST_LOG="${RUST_LOG:-info}" \
    "$BIN" run --config "$conf" </dev/null >"$log" 2>&1 &
  DUT_PID=$!
  for _ in $(seq 1 300); do
    [ -S "$sock" ] && break
    kill -0 "$DUT_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -S "$sock" ]; then
    echo "   $name did not start; last lines of $log:"
    tail -n 15 "$log" | sed 's/^/   | /'
    printf '{"kind": "failed", "dut": "%s", "round": %s, "why": "did not start (see %s)"}\n' "$name" "$ROUND" "$log" >>"$RAW"
    stop_pid "$DUT_PID"
    DUT_PID=
    l2
    return 0
  fi
  sleep 1
  l2
  sluice_stats "$name" "$sock" before
  measure_all "$name"
  sluice_stats "$name" "$sock" after
  kill -0 "$DUT_PID" 2>/dev/null || echo "   $name exited during the run; see $log"
  stop_pid "$DUT_PID"
  DUT_PID=
  l2
}

ceiling() {
  echo "== ceiling: no DUT, frames dropped at lb's l0 ingress"
  measure_all ceiling
}

# --- run -----------------------------------------------------------------------
echo "== namespaces $NS_GEN $NS_LB $NS_SINK; results in $OUT"
topo_up
# trafgen's TX ring aborts on EAGAIN when many skbs are in flight; the limit
# comes from net.core.wmem_default, which is global (not per namespace).
WMEM_ORIG=$(sysctl -n net.core.wmem_default)
sysctl -qw net.core.wmem_default=4194304
{
  printf '{"kind": "run", "date": "%s", "reps": %s, "duration": %s, "warmup": %s, "gen_cpu": %s, "dut_cpu": %s, "nice": %s, ' \
    "$(date -Is)" "$REPS" "$DUR" "$WARM" "$GEN_CPU" "$DUT_CPU" "$NICE"
  printf '"kernel": "%s", "cpu": "%s", "ncpu": %s, "sluice": "%s", "command": "%s"}\n' \
    "$(uname -r)" "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" "$NCPU" \
    "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" "$COMMAND_LINE"
} >>"$RAW"

# Rounds rather than blocks: every DUT is started afresh and measured once
# per round, so a slow spell of the machine (other jobs, a noisy neighbour
# VM) hits all DUTs alike and each round gives a paired sluice/testpmd ratio.
for ROUND in $(seq 1 "$REPS"); do
  echo "== round $ROUND of $REPS"
  [ "$CEILING" = 0 ] || ceiling
  testpmd testpmd-afp af_packet
  sluice sluice-afp dpdk af_packet
  sluice sluice-kafp afpacket
  if [ "$XDP" = 1 ]; then
    testpmd testpmd-xdp af_xdp
    sluice sluice-xdp dpdk af_xdp
  fi
done

echo
python3 "$ROOT/scripts/bench_forward_summary.py" "$RAW" | tee "$OUT/summary.txt"
echo "== raw records and logs in $OUT"
