#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what the
# machine lacks (scripts/setup.sh: DPDK, libclang, the lab's tools,
# nextest), then formatting, lints with warnings as errors (with and
# without the `dpdk` feature), then every test of the workspace with the
# `dpdk` feature on. Tests that need root (network namespaces) are reported
# as skipped when not run as root.
# Then every fuzz target for a short while (scripts/fuzz.sh, 20 s each;
# SLUICE_FUZZ_SECONDS sets it, SLUICE_NO_FUZZ=1 skips it).
# SLUICE_NO_DPDK=1 skips everything DPDK; SLUICE_NO_SETUP=1 installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SLUICE_NO_SETUP:-0}" != 1 ]; then
  scripts/setup.sh
fi
FEATURES=(--features dpdk)
if [ "${SLUICE_NO_DPDK:-0}" = 1 ]; then
  FEATURES=()
  echo "SLUICE_NO_DPDK=1: building and testing without the dpdk feature"
elif ! pkg-config --exists libdpdk 2>/dev/null; then
  echo "error: DPDK not found by pkg-config (scripts/setup.sh installs libdpdk-dev);" >&2
  echo "       or run with SLUICE_NO_DPDK=1 to test without the dpdk feature." >&2
  exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
if [ ${#FEATURES[@]} -gt 0 ]; then
  echo "== cargo clippy --workspace --all-targets --features dpdk -- -D warnings"
  cargo clippy --workspace --all-targets "${FEATURES[@]}" -- -D warnings
fi
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs every test in its own process: DPDK's EAL initialises once
  # per process, so this is also what the DPDK tests need.
  # Doc tests first (nextest does not run them), so the closing line is
  # nextest's summary of every other test.
  cargo test --workspace --doc "${FEATURES[@]}" --quiet
  cargo nextest run --workspace --lib --bins --tests --examples "${FEATURES[@]}" --no-fail-fast
else
  cargo test --workspace --lib --bins --tests --examples "${FEATURES[@]}" --no-fail-fast
fi
if [ "${SLUICE_NO_FUZZ:-0}" != 1 ]; then
  if rustup run nightly rustc --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
    echo "== fuzz smoke run (scripts/fuzz.sh ${SLUICE_FUZZ_SECONDS:-20})"
    scripts/fuzz.sh "${SLUICE_FUZZ_SECONDS:-20}"
  else
    # Reported, not passed: the rest of the suite does not depend on it.
    echo "== fuzz smoke run SKIPPED: no nightly toolchain or cargo-fuzz (scripts/setup.sh could not install them)" >&2
  fi
fi
