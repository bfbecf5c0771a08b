#!/usr/bin/env python3
"""Round-trip times of small requests on one kept-alive HTTP connection.

    lab_rtt.py HOST PORT COUNT [--gap-ms G]

Sends COUNT GET /who requests one after another (sleeping G ms between them,
so a polling balancer goes idle in between), prints one JSON line with the
p50/p90/p99/max round-trip time in microseconds.
"""
import http.client
import json
import socket
import sys
import time


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, count = a[0], int(a[1]), int(a[2])
    gap = float(a[a.index("--gap-ms") + 1]) / 1000 if "--gap-ms" in a else 0.0
    c = http.client.HTTPConnection(host, port, timeout=5)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(count):
        t = time.perf_counter()
        c.request("GET", "/who")
        c.getresponse().read()
        rtts.append((time.perf_counter() - t) * 1e6)
        if gap:
            time.sleep(gap)
    rtts.sort()
    q = lambda p: round(rtts[min(len(rtts) - 1, int(p * len(rtts)))], 1)
    print(json.dumps({"n": count, "gap_ms": gap * 1000, "p50_us": q(0.5), "p90_us": q(0.9),
                      "p99_us": q(0.99), "max_us": round(rtts[-1], 1)}))


if __name__ == "__main__":
    main()
