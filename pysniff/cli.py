"""``pysniff`` / ``python -m pysniff``: a tcpdump-like front end to the zero-copy reader.

pysniff -i IFACE [-i IFACE...] [-c COUNT] [--duration S] [-w FILE.pcap]
        [--verify --run-id N --expect N] [--no-commit] [--hold N] [--json]
pysniff --stats [--json]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from pysniff.reader import Frame, Reader, SniffError
from pysniff.signature import Tally

# Classic pcap, Ethernet. Written by hand: importing scapy takes half a minute
# in a TCG guest, and the format is two fixed headers.
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
PCAP_RECORD = struct.Struct("<IIII")


def wire_bytes(frame: Frame) -> bytes:
    """The frame as it was on the wire: the stack moves a VLAN tag out of it."""
    if frame.vlan_tci is None:
        return bytes(frame.data)
    data = frame.data
    return bytes(data[:12]) + struct.pack("!HH", 0x8100, frame.vlan_tci) + bytes(data[12:])


def write_record(out: BinaryIO, frame: Frame) -> None:
    data = wire_bytes(frame)
    sec, nsec = divmod(frame.tstamp_ns, 1_000_000_000)
    out.write(PCAP_RECORD.pack(sec, nsec // 1000, len(data), len(data)))
    out.write(data)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysniff", description="NTA zero-copy sniffer")
    p.add_argument("-i", "--interface", action="append", default=[], help="repeatable")
    p.add_argument("-c", "--count", type=int, help="stop after this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("-w", "--write", help="write frames to this pcap file")
    p.add_argument("--verify", action="store_true", help="check the lab's frame signatures")
    p.add_argument("--run-id", type=int, default=0, help="with --verify: the run to expect")
    p.add_argument("--expect", type=int, help="with --verify: frames sent per interface")
    p.add_argument("--no-commit", action="store_true", help="never hand chunks back")
    p.add_argument("--hold", type=int, default=0, help="keep the last N chunks uncommitted")
    p.add_argument("--bulk", action="store_true", help="only count and checksum frames")
    p.add_argument("--stats", action="store_true", help="print the module's counters")
    p.add_argument("--device", default="/dev/nta")
    p.add_argument("--ready-file", help="create this file once attached and mapped")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout at the end")
    return p


def sniff(args: argparse.Namespace, reader: Reader) -> dict[str, object]:
    names = {socket.if_nametoindex(n): n for n in args.interface}
    tally = Tally(run_id=args.run_id, expected=args.expect) if args.verify else None
    per_interface: dict[str, int] = {}
    frames = crc_sum = 0
    pcap = Path(args.write).open("wb") if args.write else None  # noqa: SIM115 (closed below)
    if pcap:
        pcap.write(PCAP_HEADER)
    stop = False

    def on_signal(_signo: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")
    start = time.monotonic()
    deadline = start + args.duration if args.duration else None
    while not stop and (args.count is None or frames < args.count):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        if not reader.wait(min(left, 0.2) if left is not None else 0.2):
            continue
        for frame in reader.batch():
            frames += 1
            if args.bulk:
                crc_sum += zlib.crc32(frame.data)
            else:
                name = names.get(frame.ifindex, str(frame.ifindex))
                per_interface[name] = per_interface.get(name, 0) + 1
                if tally is not None:
                    tally.add(name, wire_bytes(frame))
                if pcap:
                    write_record(pcap, frame)
        reader.commit(keep=args.hold)
    if pcap:
        pcap.close()
    return {
        "frames": frames,
        "per_interface": per_interface,
        "crc_sum": crc_sum,
        "verify": tally.summary() if tally is not None else None,
        "elapsed_s": round(time.monotonic() - start, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.stats and not args.interface:
        parser().error("give -i IFACE (or --stats)")
    try:
        with Reader(args.interface, args.device, commit=not args.no_commit) as reader:
            before = reader.stats()
            result = {} if args.stats and not args.interface else sniff(args, reader)
            result.update(
                committed=reader.committed,
                refused=reader.refused,
                stats_before=before,
                stats_after=reader.stats(),
            )
    except SniffError as e:
        print(f"pysniff: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
