"""pcap and pcapng writers, in the standard library.

Written by hand rather than with scapy's writers: importing scapy takes
tens of seconds in a TCG guest, and both formats are a few fixed headers.
Timestamps keep the record's nanoseconds (pcap: the nanosecond magic;
pcapng: if_tsresol 9). Tests read the files back with scapy.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144

PCAP_NSEC_MAGIC = 0xA1B23C4D
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _IF_NAME, _IF_TSRESOL = 0, 2, 9


class FrameWriter(Protocol):
    def write(self, data: bytes, tstamp_ns: int, ifindex: int) -> None: ...

    def close(self) -> None: ...


class PcapWriter:
    """Classic pcap, Ethernet, nanosecond timestamps."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        out.write(_PCAP_HEADER.pack(PCAP_NSEC_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))

    def write(self, data: bytes, tstamp_ns: int, ifindex: int = 0) -> None:
        sec, nsec = divmod(tstamp_ns, 1_000_000_000)
        self.out.write(_PCAP_RECORD.pack(sec, nsec, len(data), len(data)))
        self.out.write(data)

    def close(self) -> None:
        self.out.close()


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


class PcapNgWriter:
    """pcapng: one section, an interface block per NTA interface (as first seen)."""

    def __init__(self, out: BinaryIO, names: dict[int, str] | None = None) -> None:
        self.out = out
        self.names = dict(names or {})
        self.ids: dict[int, int] = {}  # ifindex -> pcapng interface id
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        out.write(_block(_SHB, shb))

    def _interface(self, ifindex: int) -> int:
        if ifindex not in self.ids:
            name = self.names.get(ifindex, str(ifindex)).encode()
            opts = _option(_IF_NAME, name) + _option(_IF_TSRESOL, b"\x09") + _option(_OPT_END, b"")
            body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + opts
            self.out.write(_block(_IDB, body))
            self.ids[ifindex] = len(self.ids)
        return self.ids[ifindex]

    def write(self, data: bytes, tstamp_ns: int, ifindex: int = 0) -> None:
        iface = self._interface(ifindex)
        head = struct.pack(
            "<IIIII", iface, tstamp_ns >> 32, tstamp_ns & 0xFFFFFFFF, len(data), len(data)
        )
        self.out.write(_block(_EPB, head + _pad4(data)))

    def close(self) -> None:
        self.out.close()


def open_writer(path: str | Path, names: dict[int, str] | None = None) -> FrameWriter:
    """pcapng if the name ends in .pcapng, classic pcap otherwise."""
    out = Path(path).open("wb")  # noqa: SIM115 (the writer owns it; its close() closes it)
    if str(path).endswith(".pcapng"):
        return PcapNgWriter(out, names)
    return PcapWriter(out)


class Closing:
    """``with Closing(writer):`` for any FrameWriter."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer

    def __enter__(self) -> FrameWriter:
        return self.writer

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.writer.close()
