"""Runs inside a guest: the receiving end of the benchmark's bulk load.

    python -m lab.guestside.tcpsink --address A --port P    (protocol.TcpSink)

Accepts every connection and reads it to its end into one buffer (the bytes
are thrown away: a download whose data nobody looks at), a thread per
connection, then closes it, which tells the sender every byte arrived. It
runs until it is stopped.
"""

from __future__ import annotations

import socket
import sys
import threading

from lab.guestside import protocol
from lab.guestside.tcplisten import listening

CHUNK = 1 << 18  # per recv: big reads, as a downloading client does


def drain(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    with conn:
        while conn.recv_into(buf):
            pass


def main(argv: list[str]) -> int:
    req = protocol.TcpSink.from_argv(argv)
    server = listening(req.address, req.port, 64)
    protocol.ready()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
