#!/usr/bin/env bash
# Installs what this machine lacks to build and test sluice, and says what
# it installed. Used by scripts/test.sh (the README's test command),
# scripts/demo.sh and .ci/run, so a fresh Debian 12 machine needs nothing
# done by hand:
#
#   scripts/setup.sh            # build + test needs (DPDK, lab tools)
#   scripts/setup.sh --demo     # only what the AF_PACKET demo needs
#   scripts/setup.sh --dpdk     # the demo's needs plus DPDK
#   scripts/setup.sh --ha       # the demo's needs plus BIRD and nftables (demo --ha)
#
# As root it installs with apt-get; otherwise through sudo when there is
# one, else it lists what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=test
for a in "$@"; do
  case "$a" in
    --demo) MODE=demo ;;
    --dpdk) MODE=dpdk ;;
    --ha) MODE=ha ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done

# Debian packages, by what needs them.
LAB=(iproute2 ethtool python3)          # namespaces, offloads, HTTP peers
BUILD_DPDK=(pkg-config libdpdk-dev libclang-dev)  # the dpdk feature (bindgen)
TEST=(tcpdump bird2 nftables llvm)      # e2e: frame checks; the HA lab's BGP speaker and firewall; llvm-mc assembles a foreign XDP program
case "$MODE" in
  demo) PKGS=("${LAB[@]}") ;;
  dpdk) PKGS=("${LAB[@]}" "${BUILD_DPDK[@]}") ;;
  ha) PKGS=("${LAB[@]}" bird2 nftables) ;;
  test) PKGS=("${LAB[@]}" "${BUILD_DPDK[@]}" "${TEST[@]}") ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
      SUDO=(sudo)
    else
      echo "error: missing packages: ${missing[*]}; install them as root (apt-get install -y ${missing[*]})" >&2
      exit 1
    fi
  fi
  echo "== installing: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Debian starts and enables a global bird.service on install: keep it from
  # starting (policy-rc.d) and disable it, so the machine runs no routing
  # daemon of its own beside the tests' namespaced ones (sluice starts its
  # own BIRD; the HA lab's routers run theirs in their namespaces).
  policy=/usr/sbin/policy-rc.d
  had_policy=1
  if [ ! -e "$policy" ]; then
    had_policy=0
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod +x "$policy"
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || "${SUDO[@]}" rm -f "$policy"
  "${SUDO[@]}" systemctl disable --now bird.service >/dev/null 2>&1 || true
fi

if [ "$MODE" = test ]; then
  # Formatting and lints are part of the test command.
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >/dev/null 2>&1 || true
  done
  # nextest runs every test in its own process (DPDK's EAL initialises once
  # per process) and reports machine tests that cannot run as skipped.
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null 2>&1 || echo "warning: cargo-nextest not installed; tests run with cargo test" >&2
  fi
  # The fuzz smoke run (scripts/fuzz.sh): libFuzzer needs a nightly
  # toolchain (-Zsanitizer) and cargo-fuzz.
  if [ "${SLUICE_NO_FUZZ:-0}" != 1 ]; then
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
      echo "== installing the nightly toolchain (fuzzing)"
      rustup toolchain install nightly --profile minimal >/dev/null 2>&1 ||
        echo "warning: no nightly toolchain; the fuzz smoke run will be skipped" >&2
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
      echo "== installing cargo-fuzz"
      cargo install --locked cargo-fuzz >/dev/null 2>&1 ||
        echo "warning: cargo-fuzz not installed; the fuzz smoke run will be skipped" >&2
    fi
  fi
fi
