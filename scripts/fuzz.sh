#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 30),
# starting from the committed seeds (fuzz/seeds/TARGET) and the corpus of
# earlier runs (fuzz/corpus/TARGET, not committed). Exits non-zero if any
# target crashes or fails a check; the input is kept in fuzz/artifacts/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain and cargo-fuzz (scripts/setup.sh installs
# both). The final statistics of each run are printed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pipeline wire control config snapshot)
# The rig's own tests first (the checksum code, and that the pipeline
# seeds reach what the target claims to check).
cargo test --lib --quiet
cargo +nightly fuzz build -O
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${SECONDS_EACH}s"
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E '^#[0-9]+.*cov:' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
  else
    tail -40 "$log"
    failed+=("$t")
  fi
  rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, no failure"
