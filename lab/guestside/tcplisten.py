"""Runs inside a guest: a TCP socket listening, so that SYNs to its port get a SYN-ACK.

    python -m lab.guestside.tcplisten --address A --port P    (protocol.TcpListen)

It never accepts: the handshakes stay half open, which is all the capture
scenario needs (the stack answers). It runs until it is stopped.

``listening`` is every guest-side TCP server's socket (tcpsink, httpd).
"""

from __future__ import annotations

import signal
import socket
import sys

from lab.guestside import protocol


def listening(address: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on ``address``:``port``; the port may be taken again at once
    (SO_REUSEADDR: a server restarted by the next test or round)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def main(argv: list[str]) -> int:
    req = protocol.TcpListen.from_argv(argv)
    with listening(req.address, req.port, 1024):  # held open until the process ends
        protocol.ready()
        signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
