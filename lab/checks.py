"""Accounting checks, as pure functions: frames on the wire, NTA's counters.

Nothing here touches a guest: each check takes typed results (a NIC's
counter delta, a reader's tally, the module's counters, frame lists) and
raises an AssertionError that says where it failed, so scenarios reuse them
and host tests run them on made-up and captured results. (Kernel reports are
``lab.kernlog``'s.)
"""

from __future__ import annotations

from collections.abc import Sequence

from lab.records import RxCounts
from pysniff import signature
from pysniff.abi import DevStats, Stats
from pysniff.signature import IfaceTally

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


def subsequence(what: str, got: Sequence[bytes], want: Sequence[bytes], missing: int) -> None:
    """``got`` is ``want`` with exactly ``missing`` frames left out, the rest in order and
    byte for byte (a NIC without flow control says how many it missed, not which)."""
    if len(got) != len(want) - missing:
        raise AssertionError(f"{what}: {len(got)} frames, want {len(want)} - {missing} missed")
    at = 0
    for i, frame in enumerate(got):
        while at < len(want) and want[at] != frame:
            at += 1
        if at == len(want):
            raise AssertionError(f"{what}: frame {i} ({len(frame)} bytes) was never sent")
        at += 1


# -- NTA's counters ------------------------------------------------------------------


def tcpdump_dropped(log: str) -> int:
    """What tcpdump says its kernel dropped (its closing "N packets dropped by kernel"
    line): the frames it missed, beside those the NIC did. No such line is a failure: a
    tcpdump that did not end cleanly says nothing of what it missed."""
    for line in log.splitlines():
        if line.endswith("packets dropped by kernel"):
            return int(line.split()[0])
    raise AssertionError(f"tcpdump printed no drop count: {log[-500:]}")


def balanced(stats: Stats) -> None:
    """At a quiet moment: allocated == freed + in_use + handed_over, published == committed +
    returned_on_close + outstanding."""
    if stats.allocated != stats.freed + stats.in_use + stats.handed_over:
        raise AssertionError(f"allocated != freed + in_use + handed_over: {stats}")
    if stats.published != stats.committed + stats.returned_on_close + stats.outstanding:
        raise AssertionError(f"published != committed + returned + outstanding: {stats}")


def accounted(nic: str, d: DevStats) -> None:
    """Every frame the device received (or sent, for a reader that asked) is published,
    filtered, or counted as missed, for one reason."""
    if d.received + d.sent != d.published + d.filtered + sum(d.missed.values()):
        raise AssertionError(
            f"{nic}: {d.received} received, {d.sent} sent, {d.published} published, "
            f"{d.filtered} filtered, {d.missed}"
        )


def quiet(stats: Stats, leaked: int) -> None:
    """With every link down, nothing is shared and only ``leaked`` chunks are in use."""
    if stats.outstanding != 0:
        raise AssertionError(f"{stats.outstanding} chunks still shared: {stats}")
    if stats.in_use != leaked:
        raise AssertionError(f"in_use {stats.in_use} with the links down, want {leaked}: leak")
    balanced(stats)
