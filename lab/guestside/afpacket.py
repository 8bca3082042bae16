"""Runs inside a guest: the AF_PACKET path tcpdump takes, for the benchmark.

A TPACKET_V3 mmap ring, as libpcap sets it up: the kernel copies each frame
into a block of the ring, userspace walks full blocks and hands them back.
Each frame gets the same work pysniff's bulk path does (a CRC32 over its
bytes, read in place), so the two differ only by the path the bytes take.
The CRCs are summed, not chained: the stack may reorder frames (GRO holds
TCP segments until the end of a NAPI poll), so only the set is comparable.

    python -m lab.guestside.afpacket --iface IFACE --count N [--duration S] [--filter EXPR]

(``protocol.Afpacket``) prints one JSON object: frames, bytes, crc_sum,
kernel drops, CPU times, and the ring memory the frames took: the blocks
handed back and the bytes the kernel filled in them (their blk_len, headers
and padding included), which the benchmark sets against NTA's chunk per
frame. A filter expression is compiled as pysniff compiles its own
(``pysniff.bpf``: libpcap's compiler, through ``tcpdump -ddd`` on the live
interface) and attached to the socket before it is bound, as libpcap's
``pcap_setfilter`` attaches tcpdump's (``SO_ATTACH_FILTER``): a frame it
refuses is never copied into the ring.
SIGINT ends the capture early, still with the report (as tcpdump does).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import zlib

from lab.guestside import protocol
from lab.guestside.reports import AfpacketReport, dumps
from pysniff import bpf

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
# libpcap's defaults for a 2 MiB buffer, in 64 KiB blocks.
BLOCK_SIZE = 1 << 16
BLOCK_NR = 32
FRAME_SIZE = 2048
RETIRE_TOV_MS = 10

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, blk_len, ...
BLOCK_HDR = struct.Struct("IIIIII")
# struct tpacket3_hdr: tp_next_offset, sec, nsec, snaplen, len, status, mac, net
PKT_HDR = struct.Struct("IIIIIIHH")
# The struct sockaddr_ll that follows it (at TPACKET_ALIGN(48)): its sll_pkttype.
PKTTYPE_OFFSET = 48 + 10
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20; what tcpdump -Q in asks for
SO_ATTACH_FILTER = 26
SOCK_FPROG = struct.Struct("@HP")  # struct sock_fprog: len, then the instructions' address


def attach_filter(sock: socket.socket, program: list[bpf.Insn]) -> None:
    """``program`` as the socket's filter; the kernel copies it before setsockopt returns."""
    packed = bpf.pack(program)
    insns = ctypes.create_string_buffer(packed, len(packed))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    SOCK_FPROG.pack(len(program), ctypes.addressof(insns)))  # fmt: skip


def link_went_down(sock: socket.socket) -> None:
    """Reads (and so clears) the socket's pending error, as libpcap does on POLLERR.

    Taking the link down sets ENETDOWN on every packet socket bound to it, and
    poll() reports POLLERR until the error is read: unread, the reader would
    spin. A link that comes back up is still captured; any other error ends
    the capture.
    """
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err not in (0, errno.ENETDOWN):
        raise OSError(err, os.strerror(err))


def sniff(iface: str, count: int, duration: float, expr: str = "") -> AfpacketReport:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if expr:
        attach_filter(sock, bpf.compile_expression(expr, iface))
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    # Received frames only, as NTA publishes: sent ones are not even copied.
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    req = struct.pack(
        "IIIIIII", BLOCK_SIZE, BLOCK_NR, FRAME_SIZE, BLOCK_SIZE * BLOCK_NR // FRAME_SIZE,
        RETIRE_TOV_MS, 0, 0,
    )  # fmt: skip
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
    ring = mmap.mmap(sock.fileno(), BLOCK_SIZE * BLOCK_NR)
    sock.bind((iface, ETH_P_ALL))
    view = memoryview(ring)
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR)
    frames = nbytes = crc_sum = 0
    blocks = bytes_in_blocks = 0
    block = 0
    protocol.ready()
    start = time.monotonic()
    deadline = start + duration
    stop = False

    def on_sigint(_signo: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_sigint)
    while frames < count and time.monotonic() < deadline and not stop:
        base = block * BLOCK_SIZE
        _, _, status, num, first, blk_len = BLOCK_HDR.unpack_from(ring, base)
        if not status & TP_STATUS_USER:
            # Short, so SIGINT and the deadline are seen.
            if any(ev & select.POLLERR for _, ev in poller.poll(100)):
                link_went_down(sock)
            continue
        at = base + first
        for _ in range(num):
            nxt, _, _, snaplen, _, _, mac, _ = PKT_HDR.unpack_from(ring, at)
            if ring[at + PKTTYPE_OFFSET] != PACKET_OUTGOING:
                crc_sum += zlib.crc32(view[at + mac : at + mac + snaplen])
                nbytes += snaplen
                frames += 1
            at += nxt
        struct.pack_into("I", ring, base + 8, TP_STATUS_KERNEL)
        blocks += 1
        bytes_in_blocks += blk_len
        block = (block + 1) % BLOCK_NR
    elapsed = time.monotonic() - start
    _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    view.release()
    ring.close()
    sock.close()
    return AfpacketReport(
        frames=frames,
        bytes=nbytes,
        crc_sum=crc_sum,
        kernel_drops=drops,
        elapsed_s=elapsed,
        utime_s=usage.ru_utime,
        stime_s=usage.ru_stime,
        blocks=blocks,
        bytes_in_blocks=bytes_in_blocks,
    )


def main(argv: list[str]) -> int:
    req = protocol.Afpacket.from_argv(argv)
    print(dumps(sniff(req.iface, req.count, req.duration, req.filter)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
