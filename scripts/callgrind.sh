#!/usr/bin/env bash
# Instructions per packet of the data path, counted by callgrind: repeatable
# on noisy machines, unlike wall time.
#   scripts/callgrind.sh [flows=10000] [new_ratio=0] [MORE BENCH ARGS...]
# e.g. scripts/callgrind.sh 1000000 0 --reply-ratio 0 --services 8 --cold
# Runs `sluice bench --packets N` (one worker on the calling thread, no
# timing) under callgrind for two packet counts; the difference of the totals
# divided by the difference of the counts is the cost per packet, free of
# start-up and warm-up. Same for the rx/MAC-swap/tx baseline. Then lists the
# hottest functions of the larger pipeline run. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${1:-10000}
RATIO=${2:-0}
shift $(( $# > 2 ? 2 : $# ))
EXTRA=("$@")
N1=${N1:-100000}
N2=${N2:-300000}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
cargo build --release --quiet
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
total() { # total Ir of a callgrind run
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.out" \
    target/release/sluice bench --flows "$FLOWS" --new-ratio "$RATIO" "${EXTRA[@]}" --packets "$2" $3 >/dev/null 2>"$OUT/$1.log"
  grep -E '^(summary|totals):' "$OUT/$1.out" | head -1 | awk '{print $2}'
}
L1=$(total lb1 $N1 ""); L2=$(total lb2 $N2 "")
B1=$(total b1 $N1 --baseline); B2=$(total b2 $N2 --baseline)
python3 - "$L1" "$L2" "$B1" "$B2" "$N1" "$N2" "$FLOWS" "$RATIO" <<'PY'
import sys, json
l1, l2, b1, b2, n1, n2 = map(int, sys.argv[1:7])
lb = (l2 - l1) / (n2 - n1); base = (b2 - b1) / (n2 - n1)
print(json.dumps({"flows": int(sys.argv[7]), "new_ratio": float(sys.argv[8]),
                  "instructions_per_packet": round(lb, 1),
                  "baseline_instructions_per_packet": round(base, 1),
                  "pipeline_minus_baseline": round(lb - base, 1)}))
PY
echo "--- hottest functions, pipeline run of $N2 packets (self instructions)"
callgrind_annotate "$OUT/lb2.out" 2>/dev/null | grep -E '^\s*[0-9,]+ ' | head -22
