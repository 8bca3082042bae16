"""Runs inside a guest: a small HTTP server, the benchmark's web-server load.

    python -m lab.guestside.httpd --address A --port P   (protocol.Httpd)

Answers every GET with a fixed 8 KiB page, HTTP/1.0 (one connection per
request, as httperf drives a server by default), until it is killed.

One thread and a selector, as an event-driven server (nginx) works: what is
measured is what capture costs beside a server, so the server itself is
kept lean. http.server's ThreadingHTTPServer took about 29 ms of guest CPU
per request under TCG (a thread and a header parser per request), enough
that its own variance hid every sniffer's cost.
"""

from __future__ import annotations

import selectors
import socket
import sys

from lab.guestside import protocol
from lab.guestside.tcplisten import listening

PAGE = bytes(range(256)) * 32
RESPONSE = (
    b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
    + f"Content-Length: {len(PAGE)}\r\n\r\n".encode()
    + PAGE
)
# socketserver's listen backlog is 5: eight clients connecting at once would
# have SYNs dropped and retried a second later (nginx and Apache use 511).
BACKLOG = 511


class Connection:
    """One client: its request read to the blank line, then the response written."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = b""
        self.left = memoryview(RESPONSE)

    def readable(self) -> bool:
        """Reads what came; whether the request is whole (or the client gone)."""
        data = self.sock.recv(4096)
        self.request += data
        return not data or b"\r\n\r\n" in self.request

    def writable(self) -> bool:
        """Writes what the socket takes; whether the response is all written."""
        self.left = self.left[self.sock.send(self.left) :]
        return not self.left


def serve(server: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            conn: Connection | None = key.data
            if conn is None:
                sock, _ = server.accept()
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, Connection(sock))
                continue
            try:
                if key.events & selectors.EVENT_READ:
                    if not conn.readable():
                        continue
                    if not conn.request:  # closed before asking
                        raise ConnectionError
                    sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                if not conn.writable():
                    continue
            except OSError:
                pass
            sel.unregister(conn.sock)
            conn.sock.close()


def main(argv: list[str]) -> int:
    req = protocol.Httpd.from_argv(argv)
    server = listening(req.address, req.port, BACKLOG)
    server.setblocking(False)
    protocol.ready()
    serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
