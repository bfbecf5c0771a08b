#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints
# with warnings as errors, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --no-fail-fast
  # nextest does not run doctests.
  cargo test --doc --quiet
else
  cargo test --all-targets --no-fail-fast
fi
