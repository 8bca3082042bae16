"""pcap and pcapng writers, in the standard library, writing frames straight from the mapping.

A batch of frames goes out in one ``writev()`` (or a few: at most IOV_MAX
buffers each): a small record header per frame, then the frame's bytes as
views into NTA's chunks, a stripped VLAN tag put back as its own 4-byte
buffer. Nothing is copied on the way, and the writer must flush before the
reader commits the chunks (``Capture`` does, at the end of each batch).

Written by hand rather than with scapy's writers: importing scapy takes
tens of seconds in a TCG guest, and both formats are a few fixed headers.
Timestamps keep the record's nanoseconds (pcap: the nanosecond magic;
pcapng: if_tsresol 9). pcapng says each frame's direction (epb_flags:
inbound, or outbound for NTA_RECORD_OUTGOING); classic pcap has no field
for it. Tests read the files back with scapy.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from pysniff.abi import RECORD_OUTGOING
from pysniff.errors import OutputError
from pysniff.reader import Frame

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
IOV_MAX = 1024

PCAP_NSEC_MAGIC = 0xA1B23C4D
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _IF_NAME, _IF_TSRESOL = 0, 2, 9
_EPB_HEAD = struct.Struct("<IIIIIII")
# epb_flags (option 2, 32 bits): bits 0-1 the direction, 1 inbound, 2 outbound.
_EPB_FLAGS = struct.Struct("<HHIHH")
_EPB_FLAGS_CODE, _EPB_INBOUND, _EPB_OUTBOUND = 2, 1, 2

Buffer = bytes | memoryview


class FrameWriter(Protocol):
    def add(self, frame: Frame) -> None:
        """Queue a frame; its bytes must stay valid until flush()."""
        ...

    def flush(self) -> None:
        """Write every queued frame."""
        ...

    def close(self) -> None: ...


def _record(frame: Frame) -> tuple[list[Buffer], int, int]:
    """What a record of ``frame`` holds: its buffers (cut at SNAPLEN), their length, and the
    frame's length on the wire. Lengths come from the buffers, so none disagrees with its
    bytes (a tag with no room to go back is not counted, a frame whose pieces do not add
    up to its length is written as it came)."""
    iov = frame.wire_iov()
    caplen = sum(map(len, iov))
    tag = caplen - sum(map(len, frame.pieces))  # 4 if the tag went back
    wire = max(frame.len + tag, caplen)
    if caplen > SNAPLEN:  # as tcpdump cuts a frame longer than its snapshot length
        cut: list[Buffer] = []
        room = SNAPLEN
        for buf in iov:
            cut.append(buf[:room])
            room -= len(cut[-1])
        iov, caplen = cut, SNAPLEN
    return iov, caplen, wire


class _Vectored:
    """Buffers queued for writev(), written IOV_MAX at a time.

    A filesystem that pins the pages it writes from (9p's zero-copy path, FUSE)
    cannot pin the pool, which is mapped by page frame: writev() fails with
    EFAULT, and from then on the frames go through a copy (as ntadump does).
    Any other failure is an OutputError; what was queued is dropped.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.fd = out.fileno()
        self.iov: list[Buffer] = []
        self.copy = False

    def flush(self) -> None:
        iov, self.iov = self.iov, []
        for at in range(0, len(iov), IOV_MAX):
            part = iov[at : at + IOV_MAX]
            done = 0
            try:
                if not self.copy:
                    done = os.writev(self.fd, part)
            except OSError as e:
                if e.errno != errno.EFAULT:
                    raise OutputError(f"cannot write {self.out.name}: {e.strerror}") from None
                self.copy = True
            if done < sum(map(len, part)):  # a copy, or the rest of a short write
                self._write(memoryview(b"".join(part))[done:])

    def _write(self, data: memoryview) -> None:
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except OSError as e:
                raise OutputError(f"cannot write {self.out.name}: {e.strerror}") from None

    def close(self) -> None:
        self.flush()
        self.out.close()


class PcapWriter(_Vectored):
    """Classic pcap, Ethernet, nanosecond timestamps."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.iov.append(_PCAP_HEADER.pack(PCAP_NSEC_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        self.flush()

    def add(self, frame: Frame) -> None:
        iov, caplen, wire = _record(frame)
        sec, nsec = divmod(frame.tstamp_ns, 1_000_000_000)
        self.iov.append(_PCAP_RECORD.pack(sec, nsec, caplen, wire))
        self.iov += iov


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


class PcapNgWriter(_Vectored):
    """pcapng: one section, an interface block per NTA interface (as first seen)."""

    def __init__(self, out: BinaryIO, names: dict[int, str] | None = None) -> None:
        super().__init__(out)
        self.names = dict(names or {})
        self.ids: dict[int, int] = {}  # ifindex -> pcapng interface id
        self.iov.append(_block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)))

    def _interface(self, ifindex: int) -> int:
        if ifindex not in self.ids:
            name = self.names.get(ifindex, str(ifindex)).encode()
            opts = _option(_IF_NAME, name) + _option(_IF_TSRESOL, b"\x09") + _option(_OPT_END, b"")
            body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + opts
            self.iov.append(_block(_IDB, body))
            self.ids[ifindex] = len(self.ids)
        return self.ids[ifindex]

    def add(self, frame: Frame) -> None:
        iface = self._interface(frame.ifindex)
        iov, caplen, wire = _record(frame)
        pad = -caplen % 4
        total = 32 + caplen + pad + _EPB_FLAGS.size
        ts = frame.tstamp_ns
        way = _EPB_OUTBOUND if frame.flags & RECORD_OUTGOING else _EPB_INBOUND
        self.iov.append(_EPB_HEAD.pack(_EPB, total, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, wire))
        self.iov += iov
        opts = _EPB_FLAGS.pack(_EPB_FLAGS_CODE, 4, way, _OPT_END, 0)
        self.iov.append(b"\0" * pad + opts + struct.pack("<I", total))


def open_writer(path: str | Path, names: dict[int, str] | None = None) -> FrameWriter:
    """pcapng if the name ends in .pcapng, classic pcap otherwise."""
    out = Path(path).open("wb")  # noqa: SIM115 (the writer owns it; its close() closes it)
    if str(path).endswith(".pcapng"):
        return PcapNgWriter(out, names)
    return PcapWriter(out)


def write_all(writer: FrameWriter, frames: Sequence[Frame]) -> None:
    for frame in frames:
        writer.add(frame)
    writer.flush()
