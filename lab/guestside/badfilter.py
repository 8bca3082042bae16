"""Runs inside a guest: malformed filters and directions, straight to the ioctl.

    python -m lab.guestside.badfilter --iface IFACE --count COUNT

A reader sets a good filter (accept nothing: ``ret #0``), then sends each
malformed request; every one must be refused with its errno and change
nothing. Then it attaches IFACE, says it is ready (``protocol.ready``), and
waits (30 s at most) until COUNT frames were filtered there: the good
program must still be the one that runs. Prints a BadFilterReport.
"""

from __future__ import annotations

import ctypes
import errno
import sys
import time

from lab.guestside import protocol
from lab.guestside.reports import BadFilterReport, dumps
from pysniff import abi
from pysniff.bpf import Insn
from pysniff.reader import Reader

RET_0 = abi.SOCK_FILTER.pack(0x06, 0, 0, 0)  # BPF_RET | BPF_K, 0: refuse every frame
WAIT_S = 30.0
LD_ABS = abi.SOCK_FILTER.pack(0x20, 0, 0, 12)  # BPF_LD | BPF_W | BPF_ABS [12]


def program(*insns: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(b"".join(insns), len(b"".join(insns)))


def main(argv: list[str]) -> int:
    req = protocol.BadFilter.from_argv(argv)
    iface, count = req.iface, req.count
    good = program(RET_0)
    big = program(*[RET_0] * (abi.BPF_MAXINSNS + 1))
    cases = {
        # name: (request, its argument)
        "len 0": (abi.IOC_SET_FILTER, abi.FILTER.pack(len=0, insns=ctypes.addressof(good))),
        "len over BPF_MAXINSNS": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=abi.BPF_MAXINSNS + 1, insns=ctypes.addressof(big))),
        "len 65537 (wraps sock_fprog's u16 to 1)": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=65537, insns=ctypes.addressof(good))),
        "null pointer": (abi.IOC_SET_FILTER, abi.FILTER.pack(len=1, insns=0)),
        "unmapped pointer": (abi.IOC_SET_FILTER, abi.FILTER.pack(len=1, insns=8)),
        "invalid opcode": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=1, insns=ctypes.addressof(program(abi.SOCK_FILTER.pack(0xFFFF, 0, 0, 0))))),
        "no return": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=1, insns=ctypes.addressof(program(LD_ABS)))),
        "jump out of the program": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=2, insns=ctypes.addressof(program(abi.SOCK_FILTER.pack(0x15, 5, 5, 0), RET_0)))),
        "reserved set": (abi.IOC_SET_FILTER, abi.FILTER.pack(
            len=1, reserved=1, insns=ctypes.addressof(good))),
        "direction 0": (abi.IOC_SET_DIRECTION, abi.DIRECTION.pack(direction=0)),
        "direction 4": (abi.IOC_SET_DIRECTION, abi.DIRECTION.pack(direction=4)),
        "direction reserved set": (abi.IOC_SET_DIRECTION, abi.DIRECTION.pack(
            direction=1, reserved=1)),
    }  # fmt: skip
    answers: dict[str, str] = {}
    with Reader([]) as r:
        r.set_filter([Insn(0x06, 0, 0, 0)])
        for name, (request, arg) in cases.items():
            try:
                r.dev.ioctl(request, bytearray(arg))
                answers[name] = "ok"
            except OSError as e:
                answers[name] = errno.errorcode.get(e.errno or 0, str(e.errno))
        r.attach(iface)
        protocol.ready()
        deadline = time.monotonic() + WAIT_S
        while r.dev_stats(iface).filtered < count and time.monotonic() < deadline:
            r.wait(0.2)
        dev = r.dev_stats(iface)
        records = r.reader_stats().records
    print(dumps(BadFilterReport(answers, dev.received, dev.filtered, dev.published, records)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
