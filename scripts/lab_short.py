#!/usr/bin/env python3
"""Short HTTP requests on fresh connections, for SECONDS, classifying failures.

    lab_short.py HOST PORT SECONDS [--gap S] [--timeout S]

One request per connection (connect, GET /who, read the answer, close),
one after another with GAP seconds between them. A failure is *retryable*
when a client would retry it on its own, because the request cannot have
reached a server (connection refused, or reset before any byte of the
response); anything else (a timeout, a reset or close mid-response) is
*fatal*. Prints a JSON line per failure, {"t": ..., "error": "...",
"retryable": bool}, and at the end {"done": true, "requests": n, "ok": n,
"retryable": {kind: n}, "fatal": {kind: n}, "backends": {"b1": n, ...}}.
"""
import json
import socket
import sys
import time


def out(d):
    print(json.dumps(d), flush=True)


def one(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    got = b""
    try:
        s.sendall(b"GET /who HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, ConnectionAbortedError) as e:
        e.partial = bool(got)
        raise
    finally:
        s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionAbortedError("incomplete response")
    return body.decode().strip()


def main():
    a = sys.argv[1:]
    if len(a) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, seconds = a[0], int(a[1]), float(a[2])
    gap = float(a[a.index("--gap") + 1]) if "--gap" in a else 0.01
    timeout = float(a[a.index("--timeout") + 1]) if "--timeout" in a else 3.0
    stats = {"requests": 0, "ok": 0, "retryable": {}, "fatal": {}, "backends": {}}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stats["requests"] += 1
        try:
            who = one(host, port, timeout)
            stats["ok"] += 1
            stats["backends"][who] = stats["backends"].get(who, 0) + 1
        except Exception as e:  # classified and counted, never fatal to the run
            kind = type(e).__name__
            retryable = isinstance(e, ConnectionRefusedError) or (
                isinstance(e, (ConnectionResetError,)) and not getattr(e, "partial", True)
            )
            bucket = stats["retryable" if retryable else "fatal"]
            bucket[kind] = bucket.get(kind, 0) + 1
            out({"t": time.time(), "error": f"{kind}: {e}", "retryable": retryable})
        time.sleep(gap)
    out(dict(done=True, **stats))


if __name__ == "__main__":
    main()
