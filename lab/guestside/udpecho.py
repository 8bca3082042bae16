"""Runs inside a guest: a UDP echo service, so the host can check the stack answers.

    python -m lab.guestside.udpecho --address A --port P --count N

(``protocol.UdpEcho``) echoes COUNT datagrams and prints how many it echoed.
It stops short after IDLE_S of silence once datagrams came (a NIC without
flow control may miss some), or FIRST_FRAME_S before the first; only the
latter is a failure.
"""

from __future__ import annotations

import socket
import sys

from lab.guestside import protocol


def main(argv: list[str]) -> int:
    req = protocol.UdpEcho.from_argv(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((req.address, req.port))
    sock.settimeout(protocol.FIRST_FRAME_S)
    protocol.ready()
    echoed = 0
    while echoed < req.count:
        try:
            data, peer = sock.recvfrom(65536)
        except TimeoutError:
            break
        sock.sendto(data, peer)
        echoed += 1
        sock.settimeout(protocol.IDLE_S)
    print(echoed)
    return 0 if echoed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
