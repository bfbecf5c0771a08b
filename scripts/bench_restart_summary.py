#!/usr/bin/env python3
"""Analysis for scripts/bench_restart.sh.

    bench_restart_summary.py record --label L --kind K --rep N --kill T --gone T --exec T
                                    --log SLUICE_LOG --conn LAB_CONN_OUTPUT --stats JSON BACKEND.pcap...
    bench_restart_summary.py line      < one record
    bench_restart_summary.py summary RAW.jsonl
"""
import json
import os
import re
import statistics
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_latency_summary import read_pcap  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_times(path):
    """Unix time of sluice's log lines that mark start-up phases."""
    marks = {}
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return marks
    for raw in lines:
        line = ANSI.sub("", raw)
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
        for key, text in (("ports", "ports open"), ("ready", "control socket ready"),
                          ("neighbors", "neighbors restored")):
            if text in line and key not in marks:
                marks[key] = t
    return marks


def record(args):
    o, files, i = {}, [], 0
    while i < len(args):
        if args[i].startswith("--"):
            o[args[i][2:]] = args[i + 1]
            i += 2
        else:
            files.append(args[i])
            i += 1
    t_kill, t_gone, t_exec = float(o["kill"]), float(o["gone"]), float(o["exec"])
    answers, error, last = [], None, None
    for line in open(o["conn"], errors="replace"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "error" in r:
            error = r
        elif "backend" in r:
            answers.append((r["t"], r["backend"]))
    gaps = [b[0] - a[0] for a, b in zip(answers, answers[1:])]
    after = [t for t, _ in answers if t > t_kill]
    first_fwd = None
    for path in files:
        for ts, _ in read_pcap(path):
            t = ts / 1e9
            if t > t_exec and (first_fwd is None or t < first_fwd):
                first_fwd = t
    marks = log_times(o["log"])
    try:
        stats = json.loads(o.get("stats", "{}"))
        stats = stats.get("result", stats)
        unresolved = stats.get("drops", {}).get("neighbor_unresolved")
    except ValueError:
        unresolved = None

    def ms(a, b):
        return None if a is None or b is None else round((b - a) * 1000, 1)

    print(json.dumps({
        "kind": "restart", "label": o["label"], "port": o["kind"], "rep": int(o["rep"]),
        "gone_ms": ms(t_kill, t_gone), "exec_after_gone_ms": ms(t_gone, t_exec),
        "ports_ms": ms(t_exec, marks.get("ports")), "ready_ms": ms(t_exec, marks.get("ready")),
        "forward_ms": ms(t_exec, first_fwd), "answer_ms": ms(t_kill, after[0] if after else None),
        "gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "answers": len(answers), "backends": sorted({b for _, b in answers}),
        "error": error, "neighbor_unresolved": unresolved,
    }))


def fmt(x):
    return "   n/a" if x is None else f"{x:6.1f}"


def line():
    r = json.loads(sys.stdin.read())
    print(f"   gone {fmt(r['gone_ms'])}  ports {fmt(r['ports_ms'])}  ready {fmt(r['ready_ms'])}"
          f"  forward {fmt(r['forward_ms'])}  answer {fmt(r['answer_ms'])}  gap {fmt(r['gap_ms'])} ms"
          f"  unresolved drops {r['neighbor_unresolved'] or 0}"
          + (f"  FAILED {r['error']}" if r["error"] else "")
          + (f"  backends {r['backends']}" if len(r["backends"]) != 1 else ""))


def summary(path):
    recs = [json.loads(x) for x in open(path) if x.strip()]
    run = next((r for r in recs if r["kind"] == "run"), {})
    rs = [r for r in recs if r["kind"] == "restart"]
    print(f"run {run.get('start')}: a request every {run.get('interval_ms')} ms on one connection; "
          f"kernel {run.get('kernel')}; sluice {run.get('commit')}")
    print(f"command: {run.get('command')}")
    print("medians in ms (min..max) over repetitions; gone/answer from SIGKILL, ports/ready/forward from exec")
    cols = ["gone_ms", "ports_ms", "ready_ms", "forward_ms", "answer_ms", "gap_ms"]
    head = f"{'binary':<10} {'port':<5} {'n':>2} " + " ".join(f"{c[:-3]:>17}" for c in cols) + "  failed  drops"
    print(head)
    print("-" * len(head))
    keys = sorted({(r["label"], r["port"]) for r in rs}, key=lambda k: (k[1], k[0]))
    for label, port in keys:
        g = [r for r in rs if r["label"] == label and r["port"] == port]
        cells = []
        for c in cols:
            v = [r[c] for r in g if r[c] is not None]
            cells.append(f"{statistics.median(v):7.1f} ({min(v):.0f}..{max(v):.0f})" if v else f"{'n/a':>17}")
            cells[-1] = f"{cells[-1]:>17}"
        failed = sum(1 for r in g if r["error"] or len(r["backends"]) != 1)
        drops = sum(r["neighbor_unresolved"] or 0 for r in g)
        print(f"{label:<10} {port:<5} {len(g):>2} " + " ".join(cells) + f"  {failed:>6}  {drops:>5}")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"record": record, "line": lambda _: line(), "summary": lambda a: summary(a[0])}.get(
        cmd, lambda _: (print(__doc__, file=sys.stderr), sys.exit(2)))(rest)


if __name__ == "__main__":
    main()
