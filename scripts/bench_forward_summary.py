#!/usr/bin/env python3
"""Summarise scripts/bench_forward.sh records (raw.jsonl).

    bench_forward_summary.py RAW.jsonl      table per DUT, ratios, sluice counters
    bench_forward_summary.py --line < REC   one line for one window record

Throughput is the growth of the sink's s0 rx_packets over the window (for the
"ceiling" row, where nothing forwards, lb's l0 rx_packets). CPU columns come
from /proc/stat over the same window: the generator's core (trafgen plus the
kernel's receive path of l0, where the copy into the DUT's ring happens) and
the DUT poller's core (poller plus the kernel's transmit path to the sink).
"""
import json
import statistics
import sys

# Which sluice row is compared with which testpmd row: same vdevs where
# there are vdevs; sluice's own AF_PACKET port against testpmd on
# net_af_packet, the nearest peer.
PAIRS = [
    ("sluice-afp", "testpmd-afp", "dpdk port, net_af_packet"),
    ("sluice-kafp", "testpmd-afp", "afpacket port vs testpmd net_af_packet"),
    ("sluice-xdp", "testpmd-xdp", "dpdk port, net_af_xdp"),
]
GOAL = 0.9


def window(rec):
    """Rates and CPU shares of one measured window."""
    dt = rec["t1"] - rec["t0"]
    c0, c1 = rec["ctr0"], rec["ctr1"]
    l0_rx, s0_rx, g0_tx, l1_txdrop, s0_rxdrop = ((b - a) / dt for a, b in zip(c0, c1))
    pps = l0_rx if rec["dut"] == "ceiling" else s0_rx

    def share(cpu):
        a, b = rec["cpu0"][cpu], rec["cpu1"][cpu]
        d = [y - x for x, y in zip(a, b)]
        tot = sum(d) or 1
        return {
            "usr": 100.0 * (d[0] + d[1]) / tot,
            "sys": 100.0 * d[2] / tot,
            "si": 100.0 * (d[5] + d[6]) / tot,
            "busy": 100.0 * (tot - d[3] - d[4]) / tot,
        }

    dut_cpu = 100.0 * (rec["dut_ticks"][1] - rec["dut_ticks"][0]) / rec["clk_tck"] / dt
    return {
        "pps": pps,
        "l0_rx": l0_rx,
        "s0_rx": s0_rx,
        "g0_tx": g0_tx,
        "l1_txdrop": l1_txdrop,
        "gen": share("cpu%d" % rec["gen_cpu"]),
        "dutc": share("cpu%d" % rec["dut_cpu"]),
        "dut_proc": dut_cpu,
        "gen_alive": rec.get("gen_alive", 1),
        "load": rec.get("loadavg1", float("nan")),
    }


def line(rec):
    w = window(rec)
    g, d = w["gen"], w["dutc"]
    print(
        "   %-12s %-5s #%d %6.3f Mpps  (gen sent %.3f, l0 rx %.3f)  gen core busy %3.0f%% (si %2.0f%%)"
        "  DUT core busy %3.0f%%  DUT process %3.0f%%%s"
        % (rec["dut"], rec["traffic"], rec["rep"], w["pps"] / 1e6, w["g0_tx"] / 1e6, w["l0_rx"] / 1e6,
           g["busy"], g["si"], d["busy"], w["dut_proc"], "" if w["gen_alive"] else "  TRAFGEN DIED")
    )


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def stats_totals(doc):
    """Worker counters summed, and drops by reason, from `sluice ctl --json stats`."""
    s = doc
    # The reply is an envelope {"v", "ok", "generation", "result": {...}}.
    while isinstance(s, dict) and "workers" not in s and isinstance(s.get("result"), dict):
        s = s["result"]
    if not isinstance(s, dict):
        return {}, {}
    totals = {}
    for w in s.get("workers", []):
        for k, v in w.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("worker", "generation"):
                totals[k] = totals.get(k, 0) + v
    return totals, dict(s.get("drops", {}))


def summary(path):
    run, windows, stats, failed = None, {}, {}, []
    for raw in open(path):
        raw = raw.strip()
        if not raw:
            continue
        rec = json.loads(raw)
        kind = rec.get("kind")
        if kind == "run":
            run = rec
        elif kind == "window":
            w = window(rec)
            w["round"] = rec["rep"]
            windows.setdefault((rec["dut"], rec["traffic"]), []).append(w)
        elif kind == "stats":
            stats.setdefault(rec["dut"], {}).setdefault(rec.get("round", 0), {})[rec["when"]] = rec["stats"]
        elif kind == "failed":
            failed.append(rec)

    if run:
        print("run %s: %s rounds, windows of %s s (after %s s warm-up); generator on CPU %s, DUT poller on CPU %s,"
              " nice %s; %s, %s CPUs, kernel %s; sluice %s"
              % (run["date"], run["reps"], run["duration"], run["warmup"], run["gen_cpu"], run["dut_cpu"],
                 run.get("nice", 0), run["cpu"], run["ncpu"], run["kernel"], run["sluice"]))
        print("command: %s" % run["command"])
        print()
    hdr = "%-12s %-6s %2s %8s %8s %8s %6s  %-16s %-16s %5s %8s %5s" % (
        "DUT", "frames", "n", "min", "median", "max", "spread", "gen core b/si %", "DUT core b/sys %",
        "DUT %", "ns/pkt", "load")
    print("Mpps at the sink (ceiling: at lb's l0)")
    print(hdr)
    print("-" * len(hdr))
    medians = {}
    for (dut, traffic), ws in windows.items():
        v = sorted(w["pps"] for w in ws)
        med = statistics.median(v)
        medians[(dut, traffic)] = (v[0], med, v[-1])
        gen_b = mean([w["gen"]["busy"] for w in ws])
        gen_si = mean([w["gen"]["si"] for w in ws])
        d_b = mean([w["dutc"]["busy"] for w in ws])
        d_sys = mean([w["dutc"]["sys"] for w in ws])
        dproc = mean([w["dut_proc"] for w in ws])
        # CPU the DUT process burnt per forwarded packet; pollers spin, so
        # this is an upper bound on the work, not the work itself.
        ns = dproc / 100.0 * 1e9 / med if med and dut != "ceiling" else float("nan")
        print("%-12s %-6s %2d %8.3f %8.3f %8.3f %5.1f%%  %5.0f / %-8.0f %5.0f / %-8.0f %5.0f %8.0f %5.1f%s" % (
            dut, traffic, len(v), v[0] / 1e6, med / 1e6, v[-1] / 1e6, 100.0 * (v[-1] - v[0]) / med if med else 0,
            gen_b, gen_si, d_b, d_sys, dproc, ns, mean([w["load"] for w in ws]),
            "" if all(w["gen_alive"] for w in ws) else "  (trafgen died in some windows)"))
    for f in failed:
        print("%-12s FAILED: %s" % (f["dut"], f["why"]))

    print()
    print("sluice / testpmd: ratio of medians; per round (paired, same round): median [min .. max]; goal >= %.2f"
          % GOAL)
    for sl, tp, what in PAIRS:
        for traffic in ("udp64", "syn64"):
            if (sl, traffic) not in medians or (tp, "udp64") not in medians:
                continue
            a, b = medians[(sl, traffic)], medians[(tp, "udp64")]
            r = a[1] / b[1] if b[1] else float("nan")
            tp_by_round = {w["round"]: w["pps"] for w in windows[(tp, "udp64")]}
            paired = sorted(w["pps"] / tp_by_round[w["round"]] for w in windows[(sl, traffic)]
                            if tp_by_round.get(w["round"]))
            pr = "%5.3f [%5.3f .. %5.3f]" % (statistics.median(paired), paired[0], paired[-1]) if paired else "-"
            print("  %-12s / %-12s %-6s %5.3f   per round %s  %s  (%s)" % (
                sl, tp, traffic, r, pr, "meets goal" if r >= GOAL else "BELOW goal", what))
    ceil = medians.get(("ceiling", "udp64"))
    if ceil:
        print()
        print("share of the generator ceiling (%.3f Mpps, medians)" % (ceil[1] / 1e6))
        for (dut, traffic), m in medians.items():
            if dut != "ceiling":
                print("  %-12s %-6s %5.3f" % (dut, traffic, m[1] / ceil[1]))

    if stats:
        print()
        print("sluice's own counters (`sluice ctl --json stats`, after - before the windows incl. warm-up,"
              " summed over rounds)")
        for dut, rounds in stats.items():
            d, dr, active, n = {}, {}, 0, 0
            for s in rounds.values():
                if "before" not in s or "after" not in s:
                    continue
                (b, drops_b), (a, drops_a) = stats_totals(s["before"]), stats_totals(s["after"])
                for k in a:
                    d[k] = d.get(k, 0) + a.get(k, 0) - b.get(k, 0)
                for k, v in drops_a.items():
                    if v - drops_b.get(k, 0):
                        dr[k] = dr.get(k, 0) + v - drops_b.get(k, 0)
                active = max(active, a.get("flows_active", 0))
                n += 1
            if not n:
                print("  %-12s no complete before/after pair" % dut)
                continue
            print("  %-12s rx %d  forwarded %d  tx %d  drops %d %s  flows active (max) %d  created %d"
                  "  table misses %d" % (
                      dut, d.get("rx_packets", 0), d.get("forwarded", 0), d.get("tx_packets", 0), d.get("drops", 0),
                      json.dumps(dr) if dr else "", active, d.get("flows_created", 0), d.get("table_misses", 0)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--line":
        for raw in sys.stdin:
            if raw.strip():
                line(json.loads(raw))
    elif len(sys.argv) == 2:
        summary(sys.argv[1])
    else:
        sys.exit(__doc__)
