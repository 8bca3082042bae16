"""Stage 4, judge: kernel logs scanned for splats, and every accounting check, as pure functions.

Nothing here touches a guest: each check takes typed results (a NIC's
counter delta, a reader's tally, the module's counters, frame lists) and
raises an AssertionError that says where it failed, so scenarios reuse them
and host tests run them on made-up and captured results.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.guestnet import RxCounts
from pysniff import signature
from pysniff.abi import DevStats, Stats
from pysniff.signature import IfaceTally

# -- splats ----------------------------------------------------------------------

# Each pattern names the kind of splat; the first that matches a line wins.
SPLATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("panic", r"Kernel panic - not syncing"),
        ("soft-lockup", r"watchdog: BUG: soft lockup|soft lockup - CPU#"),
        ("hard-lockup", r"Watchdog detected hard LOCKUP"),
        ("oops", r"\bOops\b|general protection fault|unable to handle (kernel|page)"),
        ("bug", r"\bBUG[: ]|kernel BUG at"),
        ("warning", r"\bWARNING: (CPU|at)\b|------------\[ cut here \]------------"),
        ("kasan", r"\bKASAN:"),
        ("ubsan", r"\bUBSAN:"),
        ("refcount", r"refcount_t: |\brefcount_warn"),
        ("list-corruption", r"list_(add|del) corruption|list_del corruption"),
        ("slub", r"\bPoison overwritten\b|\bRedzone overwritten\b|Object padding overwritten"),
        ("rcu-stall", r"rcu: INFO: rcu_\w+ (self-)?detected stall|rcu_sched self-detected stall"),
        ("hung-task", r"INFO: task \S+ blocked for more than"),
    )
)


@dataclass(frozen=True)
class Splat:
    source: str
    line_no: int
    kind: str
    line: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: [{self.kind}] {self.line}"


def scan(text: str, source: str = "log") -> list[Splat]:
    found = []
    for no, line in enumerate(text.splitlines(), 1):
        for kind, pattern in SPLATS:
            if pattern.search(line):
                found.append(Splat(source, no, kind, line.strip()))
                break
    return found


def scan_files(paths: list[Path]) -> list[Splat]:
    found: list[Splat] = []
    for path in paths:
        if path.is_file():
            found += scan(path.read_text(encoding="utf-8", errors="replace"), str(path))
    return found


# -- frames on the wire ------------------------------------------------------------


def nic_took(nic: str, sent: int, rx: RxCounts, flow_control: bool) -> None:
    """Each of ``sent`` frames either reached the stack or was missed by the NIC itself.

    A NIC misses a frame when its receive ring is full and counts it there.
    Anything else is a lost frame, and so is a miss on a NIC with flow
    control. QEMU's rtl8139 has none and misses whenever the guest's vCPU is
    off the host CPU longer than its 64-entry ring lasts; no pacing rules
    that out on a loaded host. A frame the NIC took and a later layer lost
    is for the caller to find, against ``rx.missed``.
    """
    if rx.packets + rx.missed != sent:
        raise AssertionError(f"{nic}: {sent} sent, {rx.packets} received, {rx.missed} missed")
    if rx.missed and flow_control:
        raise AssertionError(f"{nic} has flow control, yet missed {rx.missed} frames")


def all_but_missed(nic: str, entry: IfaceTally, sent: int, rx: RxCounts) -> set[int]:
    """A receiver's tally shows every frame once, intact, but those the NIC missed.

    Which frames a NIC without flow control missed is not known, only how
    many (see nic_took): as many must be missing, and no more. The sequence
    numbers missing.
    """
    if entry != signature.perfect(sent, entry.missing):
        raise AssertionError(f"{nic}: {entry}, NIC {rx}")
    lost = signature.expand(entry.missing)
    if len(lost) != rx.missed:
        raise AssertionError(f"{nic}: {len(lost)} frames lost, the NIC missed {rx.missed}")
    return lost


def wire_minus(batch: Sequence[bytes], lost: set[int]) -> list[bytes]:
    """The frames of ``batch`` (sequence = index) but those in ``lost``."""
    return [frame for seq, frame in enumerate(batch) if seq not in lost]


def same_frames(what: str, got: Sequence[bytes], want: Sequence[bytes]) -> None:
    """Byte for byte, in order; the first difference named."""
    if list(got) == list(want):
        return
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            raise AssertionError(
                f"{what}: frame {i} differs at byte {at}: got {len(a)} bytes "
                f"({a[at : at + 8].hex()}...), want {len(b)} bytes ({b[at : at + 8].hex()}...)"
            )
    raise AssertionError(f"{what}: {len(got)} frames, want {len(want)}")


# -- NTA's counters ------------------------------------------------------------------


def balanced(stats: Stats) -> None:
    """At a quiet moment: allocated == freed + in_use + handed_over, published == committed +
    returned_on_close + outstanding."""
    if stats.allocated != stats.freed + stats.in_use + stats.handed_over:
        raise AssertionError(f"allocated != freed + in_use + handed_over: {stats}")
    if stats.published != stats.committed + stats.returned_on_close + stats.outstanding:
        raise AssertionError(f"published != committed + returned + outstanding: {stats}")


def accounted(nic: str, d: DevStats) -> None:
    """Every frame the device received is published or counted as missed, for one reason."""
    if d.received != d.published + sum(d.missed.values()):
        raise AssertionError(f"{nic}: {d.received} received, {d.published} published, {d.missed}")


def quiet(stats: Stats, leaked: int) -> None:
    """With every link down, nothing is shared and only ``leaked`` chunks are in use."""
    if stats.outstanding != 0:
        raise AssertionError(f"{stats.outstanding} chunks still shared: {stats}")
    if stats.in_use != leaked:
        raise AssertionError(f"in_use {stats.in_use} with the links down, want {leaked}: leak")
    balanced(stats)
