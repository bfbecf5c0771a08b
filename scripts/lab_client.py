#!/usr/bin/env python3
"""Sequential HTTP requests on fresh TCP connections, tallied by backend.

    lab_client.py HOST PORT COUNT [--timeout S] [--keepalive N] [--gap-ms G]

Each request opens a new connection (like a client with no pool: S1), asks
for /who, and counts the body (the backend's name). With --keepalive N, N
requests share each connection instead. --gap-ms G waits G ms after each
request (so a polling balancer goes idle in between). Prints one JSON line:
{"ok": n, "errors": n, "backends": {"b1": n, ...}, "error_kinds": {...}}
"""
import http.client
import json
import sys
import time


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, count = args[0], int(args[1]), int(args[2])
    timeout = 2.0
    keepalive = 1
    if "--timeout" in args:
        timeout = float(args[args.index("--timeout") + 1])
    if "--keepalive" in args:
        keepalive = int(args[args.index("--keepalive") + 1])
    gap = float(args[args.index("--gap-ms") + 1]) / 1000 if "--gap-ms" in args else 0.0
    tally, errors, kinds = {}, 0, {}
    conn = None
    for i in range(count):
        try:
            if conn is None or i % keepalive == 0:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.request("GET", "/who", headers={"Connection": "keep-alive" if keepalive > 1 else "close"})
            body = conn.getresponse().read().decode().strip()
            tally[body] = tally.get(body, 0) + 1
            if keepalive == 1:
                conn.close()
                conn = None
        except Exception as e:  # counted, reported, never fatal
            errors += 1
            k = type(e).__name__
            kinds[k] = kinds.get(k, 0) + 1
            if conn is not None:
                conn.close()
            conn = None
        if gap:
            time.sleep(gap)
    print(json.dumps({"ok": count - errors, "errors": errors, "backends": tally, "error_kinds": kinds}))


if __name__ == "__main__":
    main()
