"""Runs inside a guest: a small HTTP server, the benchmark's web-server load.

    python -m lab.guestside.httpd --address A --port P   (protocol.Httpd)

Answers every GET with a fixed 8 KiB page, a thread per connection, HTTP/1.0
(one connection per request, as httperf drives a server by default), until
it is killed.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lab.guestside import protocol

PAGE = bytes(range(256)) * 32


class Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request would cost more than the request


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: eight clients connecting at once
    # would have SYNs dropped and retried a second later (nginx and Apache use 511).
    request_queue_size = 511


def main(argv: list[str]) -> int:
    req = protocol.Httpd.from_argv(argv)
    server = Server((req.address, req.port), Page)
    server.daemon_threads = True
    protocol.ready()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
