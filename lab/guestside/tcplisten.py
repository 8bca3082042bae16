"""Runs inside a guest: a TCP socket listening, so that SYNs to its port get a SYN-ACK.

    python -m lab.guestside.tcplisten --address A --port P    (protocol.TcpListen)

It never accepts: the handshakes stay half open, which is all the capture
scenario needs (the stack answers). It runs until it is stopped.
"""

from __future__ import annotations

import signal
import socket
import sys

from lab.guestside import protocol


def main(argv: list[str]) -> int:
    req = protocol.TcpListen.from_argv(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((req.address, req.port))
    sock.listen(1024)
    protocol.ready()
    signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
