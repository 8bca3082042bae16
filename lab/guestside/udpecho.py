"""Runs inside a guest: a UDP echo service, so the host can check the stack answers.

    python -m lab.guestside.udpecho ADDRESS PORT COUNT READY_FILE
Echoes COUNT datagrams (or until 60 s of silence) and exits.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    address, port, count, ready = argv
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, int(port)))
    sock.settimeout(60)
    Path(ready).write_text("ready\n")
    for _ in range(int(count)):
        try:
            data, peer = sock.recvfrom(65536)
        except TimeoutError:
            return 1
        sock.sendto(data, peer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
