#!/usr/bin/env bash
# What health checks cost the control plane: `sluice bench-control` at
# 1,000 services x 100 endpoints, with and without a TCP health check of
# every endpoint (100,000 targets) at INTERVAL ms, in the same run; with a
# baseline binary (e.g. the previous release) run the same way beside it.
#
#   scripts/bench_health.sh [-r RUNS] [-i INTERVAL_MS] [-b BASELINE_BIN] [-- BENCH ARGS]
#
# Runs inside a network namespace of its own where 10.200.0.0/16 is local
# (the bench's endpoints are 10.200.0.11...: probes reach listeners the
# bench opens on every service's port). Prints one JSON line per run and a
# summary: control-change latency p50/p99 and changes/s for each variant,
# and for the probing run the probes/s and the CPU of the prober thread,
# the control thread and the listeners (percent of one core).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 INTERVAL=1000 BASE=
while [ $# -gt 0 ]; do
  case "$1" in
    -r) RUNS=$2; shift 2 ;;
    -i) INTERVAL=$2; shift 2 ;;
    -b) BASE=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (it creates a network namespace)" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/sluice
NS=sl-bh$$
OUT=$(mktemp -d /tmp/sluice-bench-health.XXXX)
trap 'ip netns del "$NS" 2>/dev/null || true; rm -rf "$OUT"' EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip route add local 10.200.0.0/16 dev lo table local
ARGS=(--services 1000 --endpoints 100 --workers 2 --seconds 4 --spread 1 --json "$@")
for r in $(seq 1 "$RUNS"); do
  if [ -n "$BASE" ]; then
    ip netns exec "$NS" "$BASE" bench-control "${ARGS[@]}" >"$OUT/base.$r"
    echo "baseline $(cat "$OUT/base.$r")"
  fi
  ip netns exec "$NS" "$BIN" bench-control "${ARGS[@]}" >"$OUT/off.$r"
  echo "no-checks $(cat "$OUT/off.$r")"
  ip netns exec "$NS" "$BIN" bench-control "${ARGS[@]}" --health-interval-ms "$INTERVAL" >"$OUT/on.$r"
  echo "checks $(cat "$OUT/on.$r")"
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
d = sys.argv[1]
def load(kind):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{d}/{kind}.*"))]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"{'variant (medians)':<22}{'p50 ms':>9}{'p99 ms':>9}{'apply p99':>10}{'changes/s':>11}{'control %':>10}")
for kind, name in (("base", "baseline binary"), ("off", "no health checks"), ("on", "health checks")):
    rs = load(kind)
    if not rs:
        continue
    cpu = [r["cpu"]["control_pct"] for r in rs if "cpu" in r]
    print(f"{name:<22}{med([r['latency_p50_us'] for r in rs]) / 1e3:>9.2f}"
          f"{med([r['latency_p99_us'] for r in rs]) / 1e3:>9.2f}"
          f"{med([r['apply_p99_us'] for r in rs]) / 1e3:>10.2f}"
          f"{med([r['changes_per_s'] for r in rs]):>11.0f}"
          f"{med(cpu) if cpu else float('nan'):>10.1f}")
hs = [r["health"] for r in load("on") if r.get("health")]
if hs:
    print(f"probing {hs[0]['targets']} targets every {hs[0]['interval_ms']} ms (medians of {len(hs)} runs):")
    for k in ("probes_per_s", "prober_cpu_pct", "prober_us_per_probe", "acceptor_cpu_pct",
              "probes_late", "probes_failed", "up", "down", "unknown"):
        print(f"  {k:<20} {med([h[k] for h in hs]):.1f}")
PY
