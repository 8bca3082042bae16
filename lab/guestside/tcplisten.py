"""Runs inside a guest: a TCP socket listening, so that SYNs to its port get a SYN-ACK.

    python -m lab.guestside.tcplisten ADDRESS PORT READY_FILE

It never accepts: the handshakes stay half open, which is all the capture
scenario needs (the stack answers). It runs until it is stopped.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    address, port, ready = argv
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, int(port)))
    sock.listen(1024)
    Path(ready).write_text("ready\n")
    signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
