"""Kernel-side filters: a tcpdump expression compiled to classic BPF by tcpdump itself.

pysniff's guest side is standard-library only (Python starts slowly under
TCG, and the standard library has no libpcap binding), so the expression is
compiled by running ``tcpdump -i IFACE -ddd EXPR`` in the CLI's process:
libpcap's own compiler, on a live handle of the interface, exactly as
tcpdump compiles the same expression for itself. The live handle matters:
on Linux, libpcap compiles ``vlan`` to the kernel's "tag present" load
(the stack takes the tag out of the frame before any tap sees it) only for
a live handle; for a dead one (``pcap_open_dead``, or tcpdump without -i)
it looks for the tag in the frame's bytes, where it no longer is.

``-ddd`` prints the instruction count, then one instruction a line as four
decimal numbers: code jt jf k, struct sock_filter's members.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from typing import NamedTuple

from pysniff.abi import BPF_MAXINSNS, SOCK_FILTER
from pysniff.errors import FilterError


class Insn(NamedTuple):
    """struct sock_filter."""

    code: int
    jt: int
    jf: int
    k: int


def parse_ddd(text: str) -> list[Insn]:
    """tcpdump -ddd's output, checked: the count first, then that many instructions."""
    lines = text.split()
    if not lines:
        raise FilterError("tcpdump -ddd printed nothing")
    try:
        words = [int(w) for w in lines]
    except ValueError:
        raise FilterError(f"tcpdump -ddd printed something else: {text[:200]!r}") from None
    count, rest = words[0], words[1:]
    if len(rest) != 4 * count:
        raise FilterError(f"tcpdump -ddd said {count} instructions and printed {len(rest)} numbers")
    if not 1 <= count <= BPF_MAXINSNS:
        raise FilterError(f"a program of {count} instructions (the kernel takes 1 to 4096)")
    insns = [Insn(*rest[i : i + 4]) for i in range(0, len(rest), 4)]
    for n in insns:
        if not (0 <= n.code < 1 << 16 and 0 <= n.jt < 256 and 0 <= n.jf < 256):
            raise FilterError(f"tcpdump -ddd printed an instruction out of range: {n}")
        if not 0 <= n.k < 1 << 32:
            raise FilterError(f"tcpdump -ddd printed an instruction out of range: {n}")
    return insns


def compile_expression(expression: str, iface: str, tcpdump: str = "tcpdump") -> list[Insn]:
    """The program tcpdump would run for ``expression`` on ``iface``; a FilterError (with
    tcpdump's own words) for an expression it does not take."""
    program = shutil.which(tcpdump)
    if program is None:
        raise FilterError(f"{tcpdump} not found: it compiles -f's expression (apt install tcpdump)")
    proc = subprocess.run(
        [program, "-i", iface, "-ddd", expression], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()
        raise FilterError(
            f"cannot compile the filter {expression!r}: {why[-1] if why else 'tcpdump failed'}"
        )
    return parse_ddd(proc.stdout)


def pack(insns: Sequence[Insn]) -> bytes:
    """The program as an array of struct sock_filter."""
    return b"".join(SOCK_FILTER.pack(*n) for n in insns)
