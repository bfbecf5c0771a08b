#!/usr/bin/env python3
"""One long-lived HTTP/1.1 connection with a request every INTERVAL seconds.

    lab_conn.py HOST PORT SECONDS [--interval S] [--timeout S]

Prints one JSON line per request: {"t": unix_time, "i": n, "backend": "b1"}
or, on the first failure, {"t": ..., "i": n, "error": "ConnectionResetError",
"errno": 104} and exits 1. Ends with {"done": true, "ok": n} after SECONDS.
The connection is never reopened: any failure is the connection's failure.
"""
import json
import socket
import sys
import time


def out(d):
    print(json.dumps(d), flush=True)


def read_response(s, buf):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionAbortedError("connection closed by peer")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionAbortedError("connection closed by peer mid-body")
        rest += chunk
    return rest[:length].decode().strip(), rest[length:]


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, seconds = a[0], int(a[1]), float(a[2])
    interval = float(a[a.index("--interval") + 1]) if "--interval" in a else 0.2
    timeout = float(a[a.index("--timeout") + 1]) if "--timeout" in a else 10.0
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out({"t": time.time(), "connected": s.getsockname()[0] + ":" + str(s.getsockname()[1])})
    end = time.monotonic() + seconds
    i, buf = 0, b""
    while time.monotonic() < end:
        try:
            s.sendall(b"GET /who HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")
            who, buf = read_response(s, buf)
            out({"t": time.time(), "i": i, "backend": who})
        except Exception as e:  # the one failure this client exists to observe
            out({"t": time.time(), "i": i, "error": type(e).__name__, "errno": getattr(e, "errno", None)})
            sys.exit(1)
        i += 1
        time.sleep(interval)
    out({"done": True, "ok": i})


if __name__ == "__main__":
    main()
