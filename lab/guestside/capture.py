"""Runs inside a guest: capture one interface with AF_PACKET and check each frame.

The lab's reference receiver, independent of NTA: it counts the frames of a
run that reach the interface, checks each one's signature, and records the
CRC32 of every whole frame so the host can compare bytes with what it sent.
Standard library only (plus the stdlib-only signature module), because
anything imported here is read over 9p in a TCG guest.

    python -m lab.guestside.capture --iface IFACE --run-id N --count N [--timeout S]

(``protocol.Capture``); prints a CaptureReport.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
import zlib

from lab.guestside import protocol
from lab.guestside.reports import CaptureReport, dumps
from pysniff.signature import Tally

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
AUXDATA = struct.Struct("IIIHHHH")
SO_RCVBUFFORCE = 33


def with_vlan_tag(frame: bytes, ancillary: list[tuple[int, int, bytes]]) -> bytes:
    """The frame as on the wire: the stack moves a VLAN tag out of the data.

    Taps see frames after the core's skb_vlan_untag() (or the NIC's stripping),
    so the tag is put back from PACKET_AUXDATA, as libpcap does.
    """
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


def capture(iface: str, run_id: int, count: int, timeout: float) -> CaptureReport:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((iface, ETH_P_ALL))
    tally = Tally(run_id=run_id, expected=count)
    crcs: dict[int, int] = {}  # seq -> crc32 of the whole frame
    protocol.ready()
    deadline = time.monotonic() + timeout
    while (got := tally.seen.get(iface, 0) + tally.corrupt.get(iface, 0)) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Stops short once frames stop coming: a frame a NIC without flow control
        # missed ends the run in seconds, not at the timeout.
        sock.settimeout(min(left, protocol.IDLE_S))
        try:
            data, ancillary, _flags, addr = sock.recvmsg(65536, 256)
        except TimeoutError:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        frame = with_vlan_tag(data, ancillary)
        sig = tally.add(iface, frame)
        if sig is not None and sig.run_id == run_id:
            crcs[sig.seq] = zlib.crc32(frame)
    _packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return CaptureReport(tally.summary(), crcs, drops, got >= count)


def main(argv: list[str]) -> int:
    req = protocol.Capture.from_argv(argv)
    print(dumps(capture(req.iface, req.run_id, req.count, req.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
