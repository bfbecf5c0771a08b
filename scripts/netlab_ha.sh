#!/usr/bin/env bash
# The high-availability lab: several sluice instances behind two routers
# that run BIRD and spread traffic over them with ECMP, for the HA demo and
# end-to-end tests. Namespaces are named sl-<ID>-*, so runs with different
# IDs never collide; `down` removes all of them, daemons included.
#
#   netlab_ha.sh up ID [INSTANCES=2] [BACKENDS=3] [CLIENTS=2]
#   netlab_ha.sh down ID
#
# Topology (addresses inside the namespaces only):
#
#  clients c1.. (10.200.1.1x) -- rc -- front 10.200.3.0/24 -- l0 of lb1, lb2 ...
#  backends b1.. (10.200.2.1x) -- rb -- back  10.200.4.0/24 -- l1 of lb1, lb2 ...
#  management 10.200.9.0/24: rc .1, rb .2, lbK .1K (the kernel's m0)
#
# - rc, the client-side router, learns each VIP over BGP from every
#   instance (next hop: the instance's l0 address) and installs one ECMP
#   route; rb, the backend-side router, learns the clients' network from
#   every instance (next hop: its l1 address), so replies also cross an
#   instance chosen by ECMP, not necessarily the one the request came
#   through (asymmetric return).
# - Both routers hash like a real router's L4 ECMP:
#   fib_multipath_hash_policy=3 with fields 0x0037 (addresses, protocol,
#   ports). Policy 1 would take a TCP segment's socket hash from the
#   neighbouring namespace, which TCP re-rolls at every retransmission
#   timeout: flows would hop between instances.
# - BGP runs over the management network (a kernel interface in each
#   instance's namespace); l0 and l1 belong to sluice (no kernel address,
#   IPv6 and forwarding off, offloads off).
# - Health probes leave an instance through its kernel's m0: each instance
#   namespace routes the backends' network via rb's management address.
# - Sessions use hold time 3 s and BFD (100 ms x 3) on both sides; with
#   BFD=0 in the environment (for `up` and `sluice-config` alike), no BFD:
#   a dead instance then goes when the hold timer expires.
#
# The routers' BIRD state (configuration, control socket, pid) lives in
# $NETLAB_STATE (default /tmp/sluice-netlab-ID), removed by `down`.
# `netlab_ha.sh sluice-config ID K [HEALTH]` prints instance K's sluice
# configuration (HEALTH: a [service.health] table to add to the service).
set -euo pipefail
cmd=${1:?usage: netlab_ha.sh up|down|sluice-config ID ...}
ID=${2:?usage: netlab_ha.sh up|down|sluice-config ID ...}
P=sl-$ID
STATE=${NETLAB_STATE:-/tmp/sluice-netlab-$ID}
BFD=${BFD:-1}
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

quiet_link() { # ns ifname: IPv6 off, offloads off, up
  nsx "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" || true
  nsx "$1" ethtool -K "$2" gro off gso off tso off lro off tx off rx off >/dev/null 2>&1 || true
  nsx "$1" ip link set "$2" up
}

# veth from namespace $1 (name $2, mac $3 or "") to the switch bridge $4;
# the switch-side end is named $4-$1-$2 shortened, printed for `cut`.
plug() {
  local ns=$1 ifn=$2 mac=$3 br=$4 tmp=slv$RANDOM$RANDOM
  ip link add "${tmp}a" type veth peer name "${tmp}b"
  ip link set "${tmp}a" netns "$ns"
  nsx "$ns" ip link set "${tmp}a" name "$ifn"
  [ -n "$mac" ] && nsx "$ns" ip link set "$ifn" address "$mac"
  ip link set "${tmp}b" netns "$P-sw"
  nsx "$P-sw" ip link set "${tmp}b" master "$br"
  nsx "$P-sw" ip link set "${tmp}b" alias "$ns/$ifn"
  nsx "$P-sw" ethtool -K "${tmp}b" gro off gso off tso off >/dev/null 2>&1 || true
  nsx "$P-sw" ip link set "${tmp}b" up
  quiet_link "$ns" "$ifn"
}

router_bird() { # name asn mgmt-addr peer-as instances import-prefix
  local name=$1 asn=$2 addr=$3 peer_as=$4 n=$5 accept=$6
  {
    echo "log \"$STATE/$name.log\" all;"
    echo "router id $addr;"
    echo "protocol device { scan time 10; }"
    echo "protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on limit 16; }"
    [ "$BFD" = 1 ] && echo "protocol bfd { interface \"m0\" { interval 100 ms; multiplier 3; }; }"
    echo "template bgp lb {"
    echo "  local $addr as $asn; hold time 3; keepalive time 1;"
    echo "  connect delay time 1; connect retry time 1; error wait time 1, 4; error forget time 30;"
    [ "$BFD" = 1 ] && echo "  bfd on;"
    echo "  ipv4 { import where net ~ [ $accept ]; export none; };"
    echo "}"
    for k in $(seq 1 "$n"); do
      echo "protocol bgp lb$k from lb { neighbor 10.200.9.$((10 + k)) as $peer_as; }"
    done
  } > "$STATE/$name.conf"
  # A real router's BGP and BFD run on its own CPU; here the routers share
  # two cores with busy-polling sluice workers, so their BIRD runs in the
  # real-time class (as sluice runs its own) to keep BFD's 100 ms timing.
  nsx "$P-$name" chrt -f 1 bird -c "$STATE/$name.conf" -s "$STATE/$name.ctl" -P "$STATE/$name.pid" 2>>"$STATE/$name.log"
}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$STATE"
}

up() {
  local NI=${3:-2} NB=${4:-3} NC=${5:-2}
  command -v bird >/dev/null || { echo "bird not found: apt-get install bird2" >&2; exit 1; }
  down
  mkdir -p "$STATE"
  for ns in sw rc rb; do ip netns add "$P-$ns"; done
  for k in $(seq 1 "$NI"); do ip netns add "$P-lb$k"; done
  for i in $(seq 1 "$NC"); do ip netns add "$P-c$i"; done
  for i in $(seq 1 "$NB"); do ip netns add "$P-b$i"; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    nsx "$ns" ip link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  for br in brc brf brk brb brm; do
    nsx "$P-sw" ip link add "$br" type bridge
    nsx "$P-sw" ip link set "$br" type bridge ageing_time 30000 stp_state 0
    nsx "$P-sw" ip link set "$br" up
  done
  nsx "$P-sw" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
    net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true

  # Routers.
  plug "$P-rc" c0 02:00:00:00:01:01 brc; nsx "$P-rc" ip addr add 10.200.1.1/24 dev c0
  plug "$P-rc" f0 02:00:00:00:03:01 brf; nsx "$P-rc" ip addr add 10.200.3.1/24 dev f0
  plug "$P-rc" m0 02:00:00:00:09:01 brm; nsx "$P-rc" ip addr add 10.200.9.1/24 dev m0
  plug "$P-rb" b0 02:00:00:00:02:01 brb; nsx "$P-rb" ip addr add 10.200.2.1/24 dev b0
  plug "$P-rb" k0 02:00:00:00:04:01 brk; nsx "$P-rb" ip addr add 10.200.4.1/24 dev k0
  plug "$P-rb" m0 02:00:00:00:09:02 brm; nsx "$P-rb" ip addr add 10.200.9.2/24 dev m0
  for r in rc rb; do
    nsx "$P-$r" sysctl -qw net.ipv4.ip_forward=1 \
      net.ipv4.fib_multipath_hash_policy=3 net.ipv4.fib_multipath_hash_fields=0x0037
  done

  # sluice instances: data interfaces l0 (front) and l1 (back) are
  # sluice's; m0 is the kernel's, for BGP and health probes.
  for k in $(seq 1 "$NI"); do
    local ns=$P-lb$k
    plug "$ns" l0 "$(printf '02:00:00:00:03:%02x' $((10 + k)))" brf
    plug "$ns" l1 "$(printf '02:00:00:00:04:%02x' $((10 + k)))" brk
    plug "$ns" m0 "$(printf '02:00:00:00:09:%02x' $((10 + k)))" brm
    nsx "$ns" ip addr add "10.200.9.$((10 + k))/24" dev m0
    nsx "$ns" ip route add 10.200.2.0/24 via 10.200.9.2
    nsx "$ns" sysctl -qw net.ipv4.ip_forward=0
  done
  for i in $(seq 1 "$NC"); do
    plug "$P-c$i" c0 "$(printf '02:00:00:00:01:%02x' $((10 + i)))" brc
    nsx "$P-c$i" ip addr add "10.200.1.$((10 + i))/24" dev c0
    nsx "$P-c$i" ip route add default via 10.200.1.1
  done
  for i in $(seq 1 "$NB"); do
    plug "$P-b$i" b0 "$(printf '02:00:00:00:02:%02x' $((10 + i)))" brb
    nsx "$P-b$i" ip addr add "10.200.2.$((10 + i))/24" dev b0
    nsx "$P-b$i" ip route add default via 10.200.2.1
  done
  router_bird rc 65000 10.200.9.1 65001 "$NI" "198.18.0.0/15{32,32}"
  router_bird rb 65000 10.200.9.2 65001 "$NI" "10.200.1.0/24"
}

# Instance K's sluice configuration (AF_PACKET; one service web on
# 198.18.0.100:80 over every backend, listed in instance-dependent order so
# that agreement cannot come from the order).
sluice_config() {
  local k=${3:?instance} health=${4:-} nb=${NB:-3} sock=${SOCK:-$STATE/lb$3.sock}
  cat <<TOML
[control]
socket = "$sock"
flow_state = ""

[dataplane]
backend = "afpacket"
workers = 1
idle = { mode = "backoff", spin_polls = 2000, sleep_us = 50 }

# MACs as netlab_ha.sh set them (a reload needs them: only a start reads
# them from the interfaces).
[[interface]]
name = "l0"
address = "10.200.3.$((10 + k))/24"
mac = "$(printf '02:00:00:00:03:%02x' $((10 + k)))"

[[interface]]
name = "l1"
address = "10.200.4.$((10 + k))/24"
mac = "$(printf '02:00:00:00:04:%02x' $((10 + k)))"

[[route]]
dest = "10.200.2.0/24"
via = "10.200.4.1"

[network]
gateway = "10.200.3.1"

[bgp]
local_as = 65001
router_id = "10.200.9.$((10 + k))"
hold_time = 3
bfd = $([ "$BFD" = 1 ] && echo true || echo false)
bfd_interval_ms = 100
bfd_multiplier = 3
next_hop = "l0"
withdraw_wait_ms = ${WITHDRAW_WAIT_MS:-1500}

[[bgp.peer]]
name = "front"
address = "10.200.9.1"
remote_as = 65000

[[bgp.peer]]
name = "back"
address = "10.200.9.2"
remote_as = 65000
vips = false
prefixes = ["10.200.1.0/24"]
next_hop = "l1"

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"
$health
TOML
  local order
  if [ $((k % 2)) = 0 ]; then order=$(seq "$nb" -1 1); else order=$(seq 1 "$nb"); fi
  for i in $order; do
    printf '\n[[service.endpoint]]\naddress = "10.200.2.%d"\nport = 8080\n' $((10 + i))
  done
}

case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  sluice-config) sluice_config "$@" ;;
  *) echo "usage: netlab_ha.sh up|down|sluice-config ID ..." >&2; exit 2 ;;
esac
