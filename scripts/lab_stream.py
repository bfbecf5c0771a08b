#!/usr/bin/env python3
"""A steady stream of short HTTP requests, one fresh connection each.

    lab_stream.py HOST PORT SECONDS [--timeout S] [--ports LO-HI]

Runs for SECONDS, sequentially. With --ports, connection i binds local port
LO + i mod (HI - LO + 1) itself, so every port of the range is reused in
turn (the kernel's own choice may settle on a few ports of a small range). A connect() that fails with EADDRNOTAVAIL
(the client's own port range is exhausted) is retried locally after a short
pause and not counted as a failure: no packet left the host. Everything
else (timeouts, resets, refused, short replies) is a failed connection.
Prints one JSON line: {"ok": n, "errors": n, "local_retries": n,
"backends": {...}, "error_kinds": {...}, "ports": n, "slowest_s": s}, where
slowest_s is the longest a successful connection took (connect to last
byte): a stall such as a SYN retransmitted after a failover shows there.
"""
import errno
import json
import socket
import sys
import time


def one(host, port, timeout, lport=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if lport is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", lport))
        s.connect((host, port))
        lport = s.getsockname()[1]
        s.sendall(b"GET /who HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionAbortedError("short or bad reply")
        return body.decode().strip(), lport
    finally:
        s.close()


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, seconds = a[0], int(a[1]), float(a[2])
    timeout = float(a[a.index("--timeout") + 1]) if "--timeout" in a else 2.0
    pool = None
    if "--ports" in a:
        lo, hi = (int(x) for x in a[a.index("--ports") + 1].split("-"))
        pool = list(range(lo, hi + 1))
    n = 0
    ok, errors, retries, tally, kinds, ports = 0, 0, 0, {}, {}, set()
    slowest = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            t0 = time.monotonic()
            lport = pool[n % len(pool)] if pool else None
            n += 1
            who, lport = one(host, port, timeout, lport)
            slowest = max(slowest, time.monotonic() - t0)
            ok += 1
            tally[who] = tally.get(who, 0) + 1
            ports.add(lport)
        except OSError as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                retries += 1
                time.sleep(0.01)
                continue
            errors += 1
            k = type(e).__name__
            kinds[k] = kinds.get(k, 0) + 1
    print(json.dumps({"ok": ok, "errors": errors, "local_retries": retries, "backends": tally,
                      "error_kinds": kinds, "ports": len(ports), "slowest_s": round(slowest, 3)}))


if __name__ == "__main__":
    main()
