#!/usr/bin/env python3
"""Analysis for scripts/bench_latency.sh.

    bench_latency_summary.py hops --dut D --round R [--client-result JSON] CLIENT.pcap BACKEND.pcap...
    bench_latency_summary.py wrk --dut D --round R --test NAME --threads T --conns C --seconds S  < wrk output
    bench_latency_summary.py line       < the last records (one line per DUT, as the run goes)
    bench_latency_summary.py summary RAW.jsonl

hops: reads the captures (nanosecond pcap, Ethernet), pairs each SYN seen
leaving the client with the same SYN (client port, sequence number) reaching
a backend, and each SYN-ACK leaving a backend with the one reaching the
client (client port, acknowledgement number): the pairing survives DNAT.
Prints one JSON record with every one-hop time in microseconds.
"""
import json
import statistics
import struct
import sys


def read_pcap(path):
    """(timestamp_ns, frame bytes) for every record of a pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B23C4D:
        endian, scale = "<", 1
    elif magic == 0xA1B2C3D4:
        endian, scale = "<", 1000
    elif magic == 0x4D3CB2A1:
        endian, scale = ">", 1
    elif magic == 0xD4C3B2A1:
        endian, scale = ">", 1000
    else:
        raise SystemExit(f"{path}: not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"{path}: link type {linktype}, expected Ethernet")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        out.append((sec * 1_000_000_000 + frac * scale, data[off:off + incl]))
        off += incl
    return out


def tcp_of(frame):
    """(src, sport, dst, dport, seq, ack, flags) of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 14 + 20 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6 or len(ip) < ihl + 20:
        return None
    t = ip[ihl:]
    sport, dport, seq, ack = struct.unpack("!HHII", t[:12])
    return ip[12:16], sport, ip[16:20], dport, seq, ack, t[13]


SYN, ACK = 0x02, 0x10


def hops(args):
    dut, rnd, client_result = None, None, None
    files = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--dut":
            dut, i = args[i + 1], i + 2
        elif a == "--round":
            rnd, i = int(args[i + 1]), i + 2
        elif a == "--client-result":
            try:
                client_result = json.loads(args[i + 1])
            except ValueError:
                client_result = {"unparsed": args[i + 1]}
            i += 2
        else:
            files.append(a)
            i += 1
    client, backends = files[0], files[1:]
    # First sighting only: a retransmitted SYN repeats the key.
    c_syn, c_synack, b_syn, b_synack = {}, {}, {}, {}
    for ts, fr in read_pcap(client):
        p = tcp_of(fr)
        if not p:
            continue
        _, sport, _, dport, seq, ack, fl = p
        if fl & SYN and not fl & ACK:
            c_syn.setdefault((sport, seq), ts)
        elif fl & SYN and fl & ACK:
            c_synack.setdefault((dport, ack), ts)
    for path in backends:
        for ts, fr in read_pcap(path):
            p = tcp_of(fr)
            if not p:
                continue
            _, sport, _, dport, seq, ack, fl = p
            if fl & SYN and not fl & ACK:
                b_syn.setdefault((sport, seq), ts)
            elif fl & SYN and fl & ACK:
                b_synack.setdefault((dport, ack), ts)
    fwd = [(b_syn[k] - t) / 1000 for k, t in c_syn.items() if k in b_syn]
    back = [(c_synack[k] - t) / 1000 for k, t in b_synack.items() if k in c_synack]
    print(json.dumps({
        "kind": "hop", "dut": dut, "round": rnd, "client": client_result,
        "syn_seen": len(c_syn), "syn_matched": len(fwd),
        "synack_seen": len(b_synack), "synack_matched": len(back),
        "syn_us": [round(x, 2) for x in fwd], "synack_us": [round(x, 2) for x in back],
    }))


def wrk(args):
    opts = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args) - 1, 2)}
    text = sys.stdin.read()
    rps, errors = None, {}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            rps = float(s.split()[1])
        elif s.startswith("Socket errors:"):
            for part in s[len("Socket errors:"):].split(","):
                k, v = part.split()
                errors[k] = int(v)
        elif s.startswith("Non-2xx"):
            errors["non2xx"] = int(s.split()[-1])
        elif "requests in" in s:
            errors["requests"] = int(s.split()[0])
    print(json.dumps({
        "kind": "rate", "dut": opts.get("dut"), "round": int(opts.get("round", 0)),
        "test": opts.get("test"), "threads": int(opts.get("threads", 0)),
        "conns": int(opts.get("conns", 0)), "seconds": float(opts.get("seconds", 0)),
        "per_s": rps, "wrk": errors,
    }))


def pct(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def fmt_us(x):
    return "   n/a" if x != x else (f"{x:6.1f}" if x < 1000 else f"{x / 1000:5.2f}m")


def line():
    recs = [json.loads(x) for x in sys.stdin if x.strip()]
    hop = next((r for r in recs if r["kind"] == "hop"), None)
    rates = {r["test"]: r for r in recs if r["kind"] == "rate"}
    parts = []
    if hop:
        parts.append(
            f"SYN p50 {fmt_us(pct(hop['syn_us'], .5))} p99 {fmt_us(pct(hop['syn_us'], .99))} us"
            f" ({hop['syn_matched']}/{hop['syn_seen']}),"
            f" SYN-ACK p50 {fmt_us(pct(hop['synack_us'], .5))} p99 {fmt_us(pct(hop['synack_us'], .99))} us")
    for t in ("seq", "conc"):
        if t in rates:
            r = rates[t]
            parts.append(f"{t} {r['per_s'] or 0:8.0f}/s")
    print("   " + "; ".join(parts))


def summary(path):
    recs = [json.loads(x) for x in open(path) if x.strip()]
    run = next((r for r in recs if r["kind"] == "run"), {})
    duts = run.get("duts", "").split()
    print(f"run {run.get('start')}: {run.get('reps')} rounds, {run.get('conns')} sequential "
          f"connections {run.get('gap_ms')} ms apart per hop measurement, wrk windows of "
          f"{run.get('seconds')} s; {run.get('workers')} sluice worker(s), idle {run.get('idle', 'default back-off')}; {run.get('cpu')}, "
          f"{run.get('cpus')} CPUs, kernel {run.get('kernel')}; sluice {run.get('commit')}")
    print(f"command: {run.get('command')}")
    print()
    head = (f"{'DUT':<16} {'SYN c->b p50':>12} {'p99':>8} {'SYN-ACK b->c p50':>16} {'p99':>8}"
            f" {'lost':>5} {'seq conn/s':>11} {'(min..max)':>15} {'8 conc conn/s':>14} {'(min..max)':>15}")
    print("one hop in microseconds (all rounds pooled); connections/s: median of rounds")
    print(head)
    print("-" * len(head))
    table = {}
    for d in duts:
        hs = [r for r in recs if r["kind"] == "hop" and r["dut"] == d]
        syn = [x for r in hs for x in r["syn_us"]]
        synack = [x for r in hs for x in r["synack_us"]]
        lost = sum(r["syn_seen"] - r["syn_matched"] for r in hs)
        row = {"syn_p50": pct(syn, .5), "syn_p99": pct(syn, .99),
               "synack_p50": pct(synack, .5), "synack_p99": pct(synack, .99)}
        cells = []
        for t in ("seq", "conc"):
            v = [r["per_s"] for r in recs if r["kind"] == "rate" and r["dut"] == d
                 and r["test"] == t and r["per_s"] is not None]
            med = statistics.median(v) if v else float("nan")
            row[t] = med
            cells.append(f"{med:11.0f} {'(' + (f'{min(v):.0f}..{max(v):.0f}' if v else '') + ')':>15}")
        failed = sum(1 for r in recs if r["kind"] == "failed" and r["dut"] == d)
        table[d] = row
        print(f"{d:<16} {fmt_us(row['syn_p50']):>12} {fmt_us(row['syn_p99']):>8}"
              f" {fmt_us(row['synack_p50']):>16} {fmt_us(row['synack_p99']):>8} {lost:>5} "
              + " ".join(cells[:1]) + "  " + cells[1] + (f"  ({failed} failed rounds)" if failed else ""))
    print()
    if "nft" in table:
        n = table["nft"]
        print("against nftables DNAT (same run): one-hop p50 ratio (SYN, SYN-ACK), connections/s ratio (seq, conc)")
        for d, r in table.items():
            if d in ("nft",):
                continue

            def ratio(a, b):
                return a / b if b and b == b and a == a else float("nan")
            print(f"  {d:<16} hop x{ratio(r['syn_p50'], n['syn_p50']):5.2f} x{ratio(r['synack_p50'], n['synack_p50']):5.2f}"
                  f"   conn/s x{ratio(r['seq'], n['seq']):5.2f} x{ratio(r['conc'], n['conc']):5.2f}")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "hops":
        hops(rest)
    elif cmd == "wrk":
        wrk(rest)
    elif cmd == "line":
        line()
    elif cmd == "summary":
        summary(rest[0])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
