"""Runs inside a guest: the receiving end of the benchmark's bulk load.

    python -m lab.guestside.tcpsink ADDRESS PORT READY_FILE

Accepts every connection and reads it to its end into one buffer (the bytes
are thrown away: a download whose data nobody looks at), a thread per
connection, then closes it, which tells the sender every byte arrived. It
runs until it is stopped.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

CHUNK = 1 << 18  # per recv: big reads, as a downloading client does


def drain(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    with conn:
        while conn.recv_into(buf):
            pass


def main(argv: list[str]) -> int:
    address, port, ready = argv
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, int(port)))
    server.listen(64)
    Path(ready).write_text("ready\n")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
