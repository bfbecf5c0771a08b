#!/usr/bin/env python3
"""A keep-alive HTTP client pool, as common pooled clients behave.

    lab_pool.py HOST PORT SECONDS [--conns N] [--think S] [--timeout S]

N persistent HTTP/1.1 connections, used in turn: each round sends one
request on every connection, then waits THINK seconds, so every connection
sits idle between its requests. Like urllib3, Go's net/http or Java's
HttpClient, a request that fails on a *reused* connection before any byte
of the response arrived (reset, broken pipe, closed) is retried once on a
new connection: the server may have closed an idle connection at any time.
A failure of a request on a fresh connection, or of the retry, is a failed
request.

Prints one JSON line per request, {"t": unix_time, "c": conn, "backend":
"b3", "retried": false, "new": false} (with "retry_error": "..." when
retried), or {"t": ..., "c": conn, "error":
"..."} for a failed one; at the end {"done": true, "requests": n,
"failed": f, "retried": r, "connections": k}.
"""
import json
import socket
import sys
import time


def out(d):
    print(json.dumps(d), flush=True)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionAbortedError("closed before the response" if not buf else "closed mid-header")
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
            raise ConnectionAbortedError("closed mid-body")
        rest += chunk
    return rest[:length].decode().strip()


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, seconds = a[0], int(a[1]), float(a[2])
    opt = lambda name, default: float(a[a.index(name) + 1]) if name in a else default  # noqa: E731
    n = int(opt("--conns", 4))
    think = opt("--think", 0.3)
    timeout = opt("--timeout", 5.0)

    def connect():
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    pool = [None] * n
    stats = {"requests": 0, "failed": 0, "retried": 0, "connections": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in range(n):
            fresh = pool[c] is None
            retried = False
            try:
                if fresh:
                    pool[c] = connect()
                    stats["connections"] += 1
                try:
                    pool[c].sendall(b"GET /who HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")
                    who = read_response(pool[c])
                except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
                    if fresh:
                        raise
                    # Reused connection closed while idle: retry once, fresh.
                    pool[c].close()
                    retried, fresh = f"{type(e).__name__}: {e}", True
                    pool[c] = connect()
                    stats["connections"] += 1
                    stats["retried"] += 1
                    pool[c].sendall(b"GET /who HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")
                    who = read_response(pool[c])
                stats["requests"] += 1
                d = {"t": time.time(), "c": c, "backend": who, "retried": bool(retried), "new": fresh}
                if retried:
                    d["retry_error"] = retried
                out(d)
            except Exception as e:  # the failures this client exists to count
                stats["requests"] += 1
                stats["failed"] += 1
                out({"t": time.time(), "c": c, "error": f"{type(e).__name__}: {e}"})
                if pool[c] is not None:
                    pool[c].close()
                pool[c] = None
        time.sleep(think)
    out(dict(done=True, **stats))


if __name__ == "__main__":
    main()
