#!/usr/bin/env bash
# Build Pktgen-DPDK 23.03 against the system's DPDK 22.11 (Debian 12's
# libdpdk-dev), outside this repository. Nothing of Pktgen is kept here.
#
#   scripts/pktgen/build.sh [DIR]     default DIR /work/pktgen-build
#
# Result: DIR/build/app/pktgen (run.sh's default PKTGEN).
set -euo pipefail
DIR=${1:-/work/pktgen-build}
TAG=pktgen-23.03.0
need=()
for p in git meson ninja-build pkg-config libdpdk-dev liblua5.3-dev libpcap-dev libnuma-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ ! -d "$DIR/app" ]; then
  git clone --depth 1 --branch "$TAG" https://github.com/pktgen/Pktgen-DPDK.git "$DIR"
fi
cd "$DIR"
# 23.03's lib/lua includes rte_version.h without depending on DPDK, which
# fails where DPDK's headers are not in the default include path (Debian:
# /usr/include/dpdk). Add the dependency.
sed -i 's/dependencies: \[common, utils, vec, lua_dep\])/dependencies: [common, utils, vec, lua_dep, dpdk])/' lib/lua/meson.build
[ -d build ] || meson setup build -Denable_lua=true
ninja -C build
echo "built $DIR/build/app/pktgen"
