#!/usr/bin/env python3
"""A tiny HTTP/1.1 backend for the lab: answers every GET with its name.

    lab_server.py NAME ADDR PORT

Unlike `python3 -m http.server` (HTTP/1.0, one request per connection) it
keeps connections alive when the client asks, so long-lived-connection
scenarios (S4) have a real persistent TCP connection through sluice. With
"Connection: close" the server closes first, as HTTP servers do, so the
TIME_WAIT state sits on the backend side (the S3 setting).
"""
import http.server
import socketserver
import sys


class Who(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle the body would wait
    # for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    name = b"?"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.name + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind resolves its own name (getfqdn), a DNS
        # timeout of several seconds inside a namespace with no resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    Who.name = sys.argv[1].encode()
    srv = Server((sys.argv[2], int(sys.argv[3])), Who)
    print("listening", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
