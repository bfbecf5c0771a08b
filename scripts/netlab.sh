#!/usr/bin/env bash
# A lab of network namespaces around sluice, for the demo and the
# end-to-end tests. Everything lives in namespaces named sl-<ID>-*, so runs
# with different IDs never collide; `down` removes all of them.
#
#   netlab.sh up ID [BACKENDS=3] [CLIENTS=1]
#   netlab.sh down ID
#   netlab.sh replug ID l0|l1   delete sluice's interface and plug a new one
#                               of the same name and MAC (a re-created
#                               interface: same name, new index)
#
# Topology (addresses inside the namespaces only):
#
#   sl-ID-c1 (c0 10.200.1.11/24) --+              +-- (b0 10.200.2.11/24) sl-ID-b1
#   sl-ID-c2 (c0 10.200.1.12/24) --+-[brc]   [brb]+-- (b0 10.200.2.12/24) sl-ID-b2
#                                  |   sl-ID-sw   |   ...
#                                  +--- l0   l1 --+
#                                       sl-ID-lb: sluice (no IP on l0/l1)
#
# Clients route 198.18.0.0/15 via 10.200.1.254, backends default via
# 10.200.2.254: both addresses are sluice's own, answered by sluice's ARP.
# sluice's namespace has no IP on its data interfaces, IPv6 off and
# ip_forward off, so its kernel neither answers nor forwards what sluice
# handles; offloads are off so frames arrive whole and checksummed.
set -euo pipefail
cmd=${1:?usage: netlab.sh up|down ID [BACKENDS] [CLIENTS]}
ID=${2:?usage: netlab.sh up|down ID [BACKENDS] [CLIENTS]}
NB=${3:-3}
NC=${4:-1}
P=sl-$ID
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

quiet_link() { # ns ifname: IPv6 off, offloads off, up
  nsx "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" || true
  nsx "$1" ethtool -K "$2" gro off gso off tso off lro off tx off rx off >/dev/null 2>&1 || true
  nsx "$1" ip link set "$2" up
}

# veth from namespace $1 (name $2, mac $3) to the switch bridge $4.
plug() {
  local ns=$1 ifn=$2 mac=$3 br=$4 tmp=slv$RANDOM$RANDOM
  ip link add "${tmp}a" type veth peer name "${tmp}b"
  ip link set "${tmp}a" netns "$ns"
  nsx "$ns" ip link set "${tmp}a" name "$ifn"
  [ -n "$mac" ] && nsx "$ns" ip link set "$ifn" address "$mac"
  ip link set "${tmp}b" netns "$P-sw"
  nsx "$P-sw" ip link set "${tmp}b" master "$br"
  nsx "$P-sw" ethtool -K "${tmp}b" gro off gso off tso off >/dev/null 2>&1 || true
  nsx "$P-sw" ip link set "${tmp}b" up
  quiet_link "$ns" "$ifn"
}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    # Stop anything still running inside (servers, sluice).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  down
  for ns in sw lb; do ip netns add "$P-$ns"; done
  for i in $(seq 1 "$NC"); do ip netns add "$P-c$i"; done
  for i in $(seq 1 "$NB"); do ip netns add "$P-b$i"; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    nsx "$ns" ip link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  for br in brc brb; do
    nsx "$P-sw" ip link add "$br" type bridge
    nsx "$P-sw" ip link set "$br" type bridge ageing_time 30000 stp_state 0
    nsx "$P-sw" ip link set "$br" up
  done
  # With br_netfilter loaded (Docker hosts), bridged frames go through
  # ip/ip6/arptables, which validate headers and silently drop malformed
  # ones: the switch must forward what it is given, as a real one does, so
  # the tests' malformed frames reach sluice.
  nsx "$P-sw" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
    net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
  plug "$P-lb" l0 02:00:00:00:01:fe brc
  plug "$P-lb" l1 02:00:00:00:02:fe brb
  nsx "$P-lb" sysctl -qw net.ipv4.ip_forward=0
  for i in $(seq 1 "$NC"); do
    plug "$P-c$i" c0 "$(printf '02:00:00:00:01:%02x' $((10 + i)))" brc
    nsx "$P-c$i" ip addr add "10.200.1.$((10 + i))/24" dev c0
    nsx "$P-c$i" ip route add 198.18.0.0/15 via 10.200.1.254
  done
  for i in $(seq 1 "$NB"); do
    plug "$P-b$i" b0 "$(printf '02:00:00:00:02:%02x' $((10 + i)))" brb
    nsx "$P-b$i" ip addr add "10.200.2.$((10 + i))/24" dev b0
    nsx "$P-b$i" ip route add default via 10.200.2.254
  done
}

replug() {
  local ifn=${1:?usage: netlab.sh replug ID l0|l1} mac br
  case "$ifn" in
    l0) mac=02:00:00:00:01:fe br=brc ;;
    l1) mac=02:00:00:00:02:fe br=brb ;;
    *) echo "replug: l0 or l1, not $ifn" >&2; exit 2 ;;
  esac
  # Deleting one end of a veth deletes its peer (the switch port) too.
  nsx "$P-lb" ip link del "$ifn"
  plug "$P-lb" "$ifn" "$mac" "$br"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  replug) replug "${3:-}" ;;
  *) echo "usage: netlab.sh up|down|replug ID [BACKENDS] [CLIENTS] | [l0|l1]" >&2; exit 2 ;;
esac
