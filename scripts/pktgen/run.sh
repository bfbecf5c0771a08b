#!/usr/bin/env bash
# Run the Pktgen-DPDK scripts against sluice (see docs/PKTGEN.md).
#
#   scripts/pktgen/run.sh [--lab] forward [--replies]   established-flow mix to 4 VIPs
#   scripts/pktgen/run.sh [--lab] syn                   new-flow (SYN) sweep over rates (pcap, distinct SYNs)
#   scripts/pktgen/run.sh [--lab] flows [COUNT...]      flow-count sweep (default 1000 10000 100000 1000000)
#
# Bare metal (default): sluice already runs (config/pktgen.toml) on two NIC
# ports wired to the generator's two ports; this script starts pktgen with
#   PKTGEN      pktgen binary (default /work/pktgen-build/build/app/pktgen, or on PATH)
#   PG_EAL      its EAL arguments, e.g. "-l 4-6 -n 4 -a 0000:5e:00.0 -a 0000:5e:00.1 --file-prefix pktgen"
#   PG_MATRIX   its core/port matrix (default "[5:6].0,[5:6].1" style: see pktgen -h), here default "1.[0-1]"
#   SLUICE_SOCK sluice's control socket (default /run/sluice/sluice.sock), for `ctl stats` before/after
#   SLUICE_BIN  sluice binary (default target/release/sluice)
# and the PG_* settings read by common.lua (PG_RATE, PG_SIZE, PG_DURATION,
# PG_FLOWS, PG_VIPS, PG_LB_MAC0/1, PG_SYN_RATES, ...).
#
# --lab: everything on one machine, no NICs: namespaces <pid>-gen and
# <pid>-lb joined by two veth pairs (g0-l0 client side, s0-l1 backend side);
# sluice (backend dpdk, net_af_packet vdevs on l0/l1, config/pktgen.toml with
# the vdevs in place of the PCI addresses) in lb, pktgen (net_af_packet on
# g0 and s0, --no-huge) in gen. Needs root. Removed on exit.
#
# Output: pktgen's log, RESULT lines (pps sent/received per port over the
# measured window) and sluice's `ctl stats` before and after, in
# OUT (default /tmp/sluice-pktgen-<time>); the RESULT lines and stats are
# also printed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

LAB=0
if [ "${1:-}" = --lab ]; then LAB=1; shift; fi
MODE=${1:-}
[ -n "$MODE" ] || { sed -n '2,29p' "$0"; exit 2; }
shift
REPLIES=${PG_REPLIES:-0}
COUNTS=()
case "$MODE" in
  forward) [ "${1:-}" = --replies ] && { REPLIES=1; shift; } ;;
  syn) ;;
  flows) COUNTS=("$@"); [ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000 100000 1000000); set -- ;;
  -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
  *) echo "unknown mode $MODE (forward, syn, flows)" >&2; exit 2 ;;
esac
[ $# -eq 0 ] || { echo "unexpected arguments: $*" >&2; exit 2; }

PKTGEN=${PKTGEN:-/work/pktgen-build/build/app/pktgen}
[ -x "$PKTGEN" ] || PKTGEN=$(command -v pktgen || true)
[ -n "$PKTGEN" ] && [ -x "$PKTGEN" ] || { echo "no pktgen binary: set PKTGEN (scripts/pktgen/build.sh builds one)" >&2; exit 1; }
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
OUT=${OUT:-/tmp/sluice-pktgen-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export PG_DIR=$HERE PG_REPLIES=$REPLIES

P=pg$$
NS_GEN=$P-gen
NS_LB=$P-lb
SLUICE_PID=
cleanup() {
  set +e
  if [ -n "$SLUICE_PID" ] && kill -0 "$SLUICE_PID" 2>/dev/null; then
    kill -INT "$SLUICE_PID"
    for _ in $(seq 1 50); do kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SLUICE_PID" 2>/dev/null
  fi
  if [ "$LAB" = 1 ]; then
    ip netns del "$NS_GEN" 2>/dev/null
    ip netns del "$NS_LB" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

GEN=()   # command prefix for pktgen
if [ "$LAB" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "--lab needs root (namespaces)" >&2; exit 1; }
  [ -x "$SLUICE_BIN" ] || { echo "no sluice at $SLUICE_BIN: cargo build --release --features dpdk" >&2; exit 1; }
  ip netns add "$NS_GEN"
  ip netns add "$NS_LB"
  for ns in "$NS_GEN" "$NS_LB"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add g0 netns "$NS_GEN" address 02:00:00:00:01:01 type veth peer name l0 netns "$NS_LB" address 02:00:00:00:01:fe
  ip link add s0 netns "$NS_GEN" address 02:00:00:00:02:01 type veth peer name l1 netns "$NS_LB" address 02:00:00:00:02:fe
  for i in g0 s0; do ip -n "$NS_GEN" link set "$i" up; done
  for i in l0 l1; do ip -n "$NS_LB" link set "$i" up; done
  for pair in "$NS_GEN g0" "$NS_GEN s0" "$NS_LB l0" "$NS_LB l1"; do
    set -- $pair
    ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off rx off >/dev/null 2>&1 || true
  done
  AFP=qpairs=1,blocksz=4096,framesz=2048,framecnt=4096,qdisc_bypass=1
  SLUICE_SOCK=$OUT/sluice.sock
  # config/pktgen.toml with the vdevs in place of the PCI addresses, one
  # worker, no hugepages, backoff idle (a 2-core VM shares its cores with
  # the generator).
  sed -e "s|^socket = .*|socket = \"$SLUICE_SOCK\"|" \
    -e 's|^workers = .*|workers = 1|' -e 's|^cores = .*|cores = [0]|' \
    -e 's|^flow_capacity = .*|flow_capacity = 2097152|' \
    -e 's|^idle = .*|idle = { mode = "backoff", spin_polls = 2000, sleep_us = 50 }|' \
    -e "s|^eal_args = .*|eal_args = [\"--no-huge\", \"-m\", \"1024\", \"--no-pci\", \"--file-prefix\", \"$P-lb\", \"-l\", \"0\"]|" \
    -e "s|^name = \"0000:3b:00.0\"|name = \"net_af_packet0,iface=l0,$AFP\"|" \
    -e "s|^name = \"0000:3b:00.1\"|name = \"net_af_packet1,iface=l1,$AFP\"|" \
    "$ROOT/config/pktgen.toml" >"$OUT/sluice.toml"
  ip netns exec "$NS_LB" env RUST_LOG="${RUST_LOG:-info}" "$SLUICE_BIN" run --config "$OUT/sluice.toml" \
    </dev/null >"$OUT/sluice.log" 2>&1 &
  SLUICE_PID=$!
  for _ in $(seq 1 300); do [ -S "$SLUICE_SOCK" ] && break; kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.1; done
  [ -S "$SLUICE_SOCK" ] || { echo "sluice did not start:" >&2; tail -n 20 "$OUT/sluice.log" >&2; exit 1; }
  PG_EAL=${PG_EAL:-"-l 0-1 -n 1 --no-huge -m 4096 --no-pci --file-prefix $P-gen --vdev net_af_packet0,iface=g0,$AFP --vdev net_af_packet1,iface=s0,$AFP"}
  PG_MATRIX=${PG_MATRIX:-"1.[0-1]"}
  GEN=(ip netns exec "$NS_GEN")
else
  SLUICE_SOCK=${SLUICE_SOCK:-/run/sluice/sluice.sock}
  : "${PG_EAL:?set PG_EAL to the EAL arguments of pktgen (cores, -a PCI addresses, --file-prefix)}"
  PG_MATRIX=${PG_MATRIX:-"1.[0-1]"}
fi

stats() { # WHEN
  echo "== sluice ctl stats ($1)" | tee -a "$OUT/stats.txt"
  if [ -x "$SLUICE_BIN" ] && [ -S "$SLUICE_SOCK" ]; then
    "$SLUICE_BIN" ctl --socket "$SLUICE_SOCK" stats 2>&1 | tee -a "$OUT/stats.txt"
  else
    echo "(no sluice control socket at $SLUICE_SOCK)" | tee -a "$OUT/stats.txt"
  fi
}

pktgen_run() { # NAME SCRIPT [EXTRA PKTGEN ARGS...]
  local name=$1 script=$2
  shift 2
  echo "== pktgen $name: $PKTGEN $PG_EAL -- -P -m $PG_MATRIX $* -f $script"
  # pktgen draws its screen on the terminal; the RESULT lines come from the
  # script. stdin from /dev/null: the script ends with pktgen.quit().
  # shellcheck disable=SC2086
  # A guard timeout: a script error leaves pktgen at its prompt, waiting.
  local limit=$(( (${PG_WARMUP:-2} + ${PG_DURATION:-10}) * $(wc -w <<<"${PG_SYN_RATES:-x}") + 120 ))
  "${GEN[@]}" timeout -k 5 "$limit" "$PKTGEN" $PG_EAL -- -P -m "$PG_MATRIX" "$@" -f "$script" </dev/null >"$OUT/pktgen-$name.log" 2>&1 ||
    echo "pktgen $name: exit status $? (124: stopped after $limit s)" >&2
  # Strip the screen's escape sequences for the log we print.
  sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$OUT/pktgen-$name.log" | tr '\r' '\n' | grep -E '^(RESULT|forward|syn|flow)' | tee -a "$OUT/results.txt" || {
    echo "pktgen $name printed no RESULT; last lines of $OUT/pktgen-$name.log:" >&2
    sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$OUT/pktgen-$name.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -n 25 >&2
  }
}

stats before
case "$MODE" in
  forward) pktgen_run forward "$HERE/forward.lua" ;;
  syn)
    # One pktgen process per rate (in the lab a second window in the same
    # process hung once after the first, pktgen 23.03 over net_af_packet),
    # each replaying its own pcap of PG_SYN_FLOWS distinct SYNs from client
    # addresses no other rate used: every SYN of a window is a new flow for
    # sluice until the pcap wraps (range mode repeats after 24,576 tuples;
    # syn_sweep.lua keeps that variant: PG_SYN_RANGE=1).
    i=0
    for r in ${PG_SYN_RATES:-1 2 5 10 20 50 100}; do
      i=$((i + 1))
      if [ "${PG_SYN_RANGE:-0}" = 1 ]; then
        PG_SYN_RATES=$r pktgen_run "syn-$r" "$HERE/syn_sweep.lua"
      else
        n=${PG_SYN_FLOWS:-1000000}
        python3 "$HERE/mkpcap.py" "$OUT/syn-$r.pcap" "$n" --flag syn --size "${PG_SIZE:-64}" \
          --vips "${PG_VIPS:-4}" --client-base "198.19.$((i * 8)).1" \
          --dst-mac "${PG_LB_MAC0:-02:00:00:00:01:fe}" --src-mac "${PG_GEN_MAC0:-02:00:00:00:01:01}"
        PG_RATE=$r PG_FLOWS=$n PG_LABEL="syn rate=$r%" pktgen_run "syn-$r" "$HERE/flow_sweep.lua" \
          -s "${PG_CLIENT_PORT:-0}:$OUT/syn-$r.pcap"
        rm -f "$OUT/syn-$r.pcap"
      fi
      stats "after SYN rate $r%"
    done
    ;;
  flows)
    for n in "${COUNTS[@]}"; do
      python3 "$HERE/mkpcap.py" "$OUT/flows-$n.pcap" "$n" --size "${PG_SIZE:-64}" --vips "${PG_VIPS:-4}" \
        --dst-mac "${PG_LB_MAC0:-02:00:00:00:01:fe}" --src-mac "${PG_GEN_MAC0:-02:00:00:00:01:01}"
      PG_FLOWS=$n pktgen_run "flows-$n" "$HERE/flow_sweep.lua" -s "${PG_CLIENT_PORT:-0}:$OUT/flows-$n.pcap"
      stats "after $n flows"
    done
    ;;
esac
[ "$MODE" = forward ] && stats after
echo "== output in $OUT"
