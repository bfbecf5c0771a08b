#!/usr/bin/env bash
# sluice HA demo (scripts/demo.sh --ha): two sluice instances behind a
# router that learns the VIP from both over BGP (BIRD on each side) and
# spreads connections with ECMP; three HTTP backends; two clients.
#
#   1. both instances up: the router's route, traffic spread over them;
#   2. lb1 stopped gracefully (withdraw, wait, then stop) while keep-alive
#      connections and a stream of new ones run: failures and the longest
#      wait are printed;
#   3. lb1 started again: it rejoins the route;
#   4. lb2 killed without warning (its frames dropped on the switch, then
#      SIGKILL): the router drops it when BFD says so.
#
# BGP: hold time 3 s, BFD 100 ms x 3; `BFD=0 scripts/demo.sh --ha` runs
# without BFD (the kill is then noticed when the hold timer expires).
# Topology: scripts/netlab_ha.sh. Runs as root; installs what is missing
# (iproute2, ethtool, python3, bird2, nftables); removes everything it
# created on exit, Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && exec sudo "$0" "$@"
  echo "run as root: the demo creates network namespaces" >&2
  exit 1
fi
scripts/setup.sh --ha
echo "== building sluice"
cargo build --release --quiet
BIN=$PWD/target/release/sluice

ID=ha$$
STATE=$(mktemp -d /tmp/sluice-$ID.XXXX)
export NETLAB_STATE=$STATE/netlab
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  scripts/netlab_ha.sh down "$ID"
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== lab: namespaces sl-$ID-* (routers rc, rb; instances lb1, lb2; backends b1-b3; clients c1, c2)"
scripts/netlab_ha.sh up "$ID" 2 3 2
for i in 1 2 3; do
  ip netns exec "sl-$ID-b$i" python3 scripts/lab_server.py "b$i" "10.200.2.1$i" 8080 >/dev/null 2>&1 &
  PIDS+=($!)
  disown
done
declare -A LB
start() {
  SOCK=$STATE/lb$1.sock NB=3 scripts/netlab_ha.sh sluice-config "$ID" "$1" >"$STATE/lb$1.toml"
  RUST_LOG=${RUST_LOG:-info} ip netns exec "sl-$ID-lb$1" "$BIN" run --config "$STATE/lb$1.toml" >>"$STATE/lb$1.log" 2>&1 &
  LB[$1]=$!
  PIDS+=($!)
  disown   # killed on purpose below: no job-control notice
}
hops() { ip netns exec "sl-$ID-rc" ip route show 198.18.0.100 | grep -c via || true; }
wait_hops() { # count: waits until the router's VIP route has that many next hops
  for _ in $(seq 1 400); do [ "$(hops)" = "$1" ] && return 0; sleep 0.025; done
  echo "the router never reached $1 next hops" >&2; return 1
}
now() { date +%s.%N; }
ms() { python3 -c "print(f'{($2 - $1) * 1000:.0f} ms')"; }
ctl() { local k=$1; shift; "$BIN" ctl --socket "$STATE/lb$k.sock" "$@"; }
flows() { ctl "$1" --json stats | python3 -c 'import json,sys; print(sum(w["flows_created"] for w in json.load(sys.stdin)["result"]["workers"]))'; }

echo "== starting lb1 and lb2 (each starts its own BIRD)"
start 1; start 2
wait_hops 2
echo "-- the router's route to the VIP (its kernel FIB):"
ip netns exec "sl-$ID-rc" ip route show 198.18.0.100 | sed 's/^/   /'
echo "-- lb1's view:"
ctl 1 vip list | sed 's/^/   /'

echo "== 2000 requests on new connections (1000 from each client)"
f1=$(flows 1); f2=$(flows 2)
clients=()
for c in 1 2; do
  ip netns exec "sl-$ID-c$c" python3 scripts/lab_client.py 198.18.0.100 80 1000 >"$STATE/spread$c.json" &
  clients+=($!)
done
wait "${clients[@]}"
sleep 0.3   # counters are published once per burst
python3 - "$STATE/spread1.json" "$STATE/spread2.json" "$(( $(flows 1) - f1 ))" "$(( $(flows 2) - f2 ))" <<'PY'
import json, sys
rs = [json.load(open(p)) for p in sys.argv[1:3]]
n1, n2 = int(sys.argv[3]), int(sys.argv[4])
ok = sum(r["ok"] for r in rs); err = sum(r["errors"] for r in rs)
print(f"   instance   connections  share")
for k, n in (("lb1", n1), ("lb2", n2)):
    print(f"   {k:<10} {n:>11}  {100 * n / max(1, n1 + n2):5.1f}%")
b = {}
for r in rs:
    for k, v in r["backends"].items():
        b[k] = b.get(k, 0) + v
print("   backends: " + ", ".join(f"{k} {v}" for k, v in sorted(b.items())) + f"; ok {ok}, errors {err}")
PY

# Keep-alive connections (a request every 100 ms) and streams of new
# connections while EVENT happens; prints what the clients saw.
run_event() { # title event-function
  local title=$1 ev=$2 conns=() streams=()
  for c in 1 2 1 2 1 2 1 2; do
    ip netns exec "sl-$ID-c$c" python3 scripts/lab_conn.py 198.18.0.100 80 6 --interval 0.1 --timeout 8 \
      >"$STATE/conn${#conns[@]}.out" 2>/dev/null &
    conns+=($!)
  done
  for c in 1 2; do
    ip netns exec "sl-$ID-c$c" python3 scripts/lab_stream.py 198.18.0.100 80 5 --timeout 6 >"$STATE/stream$c.out" &
    streams+=($!)
  done
  sleep 1.5
  echo "== $title"
  $ev
  wait "${conns[@]}" "${streams[@]}" 2>/dev/null || true
  python3 - "$STATE" <<'PY'
import glob, json, sys
d = sys.argv[1]
sent = failed = 0
worst = 0.0
for p in glob.glob(f"{d}/conn*.out"):
    ts = []
    for line in open(p):
        r = json.loads(line)
        if "backend" in r:
            ts.append(r["t"]); sent += 1
        elif "error" in r:
            failed += 1; sent += 1
    worst = max([worst] + [b - a - 0.1 for a, b in zip(ts, ts[1:])])
s = [json.load(open(p)) for p in glob.glob(f"{d}/stream*.out")]
print(f"   keep-alive connections: {sent} requests, {failed} failed, longest without an answer {worst * 1000:.0f} ms")
print(f"   new connections:        {sum(x['ok'] for x in s)} ok, {sum(x['errors'] for x in s)} failed, slowest {max(x['slowest_s'] for x in s) * 1000:.0f} ms")
PY
  rm -f "$STATE"/conn*.out "$STATE"/stream*.out
}

stop_lb1() {
  local t0; t0=$(now)
  kill -TERM "${LB[1]}"
  wait_hops 1
  echo "   lb1 withdrawn from the router after $(ms "$t0" "$(now)") (still forwarding)"
  while kill -0 "${LB[1]}" 2>/dev/null; do sleep 0.01; done
  echo "   lb1 exited after $(ms "$t0" "$(now)")"
}
run_event "stopping lb1 gracefully (withdraw, wait for the router, then stop)" stop_lb1

join_lb1() {
  local t0; t0=$(now)
  start 1
  wait_hops 2
  echo "   lb1 back in the router's route $(ms "$t0" "$(now)") after start"
}
run_event "starting lb1 again" join_lb1

kill_lb2() {
  local t0 mac
  {
    echo "add table bridge demo"
    echo "add chain bridge demo cut { type filter hook forward priority 0; policy accept; }"
    for seg in 03 04 09; do
      mac="02:00:00:00:$seg:0c"
      echo "add rule bridge demo cut ether saddr $mac drop"
      echo "add rule bridge demo cut ether daddr $mac drop"
    done
  } >"$STATE/cut.nft"
  t0=$(now)
  ip netns exec "sl-$ID-sw" nft -f "$STATE/cut.nft"
  kill -KILL "${LB[2]}"
  wait_hops 1
  echo "   lb2 dropped from the router $(ms "$t0" "$(now)") after it vanished (hold time 3 s, BFD $([ "${BFD:-1}" = 1 ] && echo '100 ms x 3' || echo off))"
}
run_event "killing lb2 without warning (its frames dropped on the switch, then SIGKILL)" kill_lb2
echo "== lb1's view at the end"
ctl 1 stats | sed 's/^/   /'
