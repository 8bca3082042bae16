"""Runs inside a guest: a UDP echo service, so the host can check the stack answers.

    python -m lab.guestside.udpecho ADDRESS PORT COUNT READY_FILE
Echoes COUNT datagrams and prints how many it echoed. It stops short after
IDLE_S of silence once datagrams came (a NIC without flow control may miss
some), or FIRST_S before the first; only the latter is a failure.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

FIRST_S = 60.0
IDLE_S = 3.0


def main(argv: list[str]) -> int:
    address, port, count, ready = argv
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, int(port)))
    sock.settimeout(FIRST_S)
    Path(ready).write_text("ready\n")
    echoed = 0
    while echoed < int(count):
        try:
            data, peer = sock.recvfrom(65536)
        except TimeoutError:
            break
        sock.sendto(data, peer)
        echoed += 1
        sock.settimeout(IDLE_S)
    print(echoed)
    return 0 if echoed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
