"""Runs inside a guest: UDP sockets that receive and never read, as a careless local user's.

    python -m lab.guestside.udpsink --address A --first-port P --count N   (protocol.UdpSink)

Binds COUNT sockets on consecutive ports and holds them unread until
SIGTERM, then prints a SinkReport: per socket, the memory the kernel
charged for the datagrams it holds (SO_MEMINFO) against its rcvbuf, and
how many it dropped for want of room.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys

from lab.guestside import protocol
from lab.guestside.reports import SinkReport, SocketMemory, dumps

SO_MEMINFO = 55
# include/uapi/linux/sock_diag.h: SK_MEMINFO_RMEM_ALLOC, _RCVBUF, ... _DROPS (9 u32).
MEMINFO = struct.Struct("9I")


def memory(sock: socket.socket) -> SocketMemory:
    info = MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, MEMINFO.size))
    return SocketMemory(rmem_alloc=info[0], rcvbuf=info[1], drops=info[8])


def main(argv: list[str]) -> int:
    req = protocol.UdpSink.from_argv(argv)
    socks = []
    for port in range(req.first_port, req.first_port + req.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((req.address, port))
        socks.append(s)
    signal.signal(signal.SIGTERM, lambda *_: None)
    protocol.ready()
    signal.pause()
    print(dumps(SinkReport([memory(s) for s in socks])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
