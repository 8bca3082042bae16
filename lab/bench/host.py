"""How busy the host was with other work while a trial's window was open.

Under TCG a guest's clock is the host's: a vCPU thread that waits for a
host CPU still sees its time pass, so every CPU figure of the guest grows
when other processes on the host compete (a compiler, another guest). The
bench cannot keep them away; it measures them. A snapshot holds the host's
busy time (/proc/stat) and the CPU time of this process and all its
descendants (QEMU, the load's threads); between two snapshots, the rest is
what other processes used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Snapshot:
    busy_ticks: int  # the host's non-idle time, every CPU
    ours_ticks: int  # this process and its descendants (QEMU among them)

    @classmethod
    def take(cls, root: int | None = None) -> Snapshot:
        return cls(host_busy_ticks(), tree_ticks(os.getpid() if root is None else root))


def host_busy_ticks() -> int:
    fields = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields[:8]) - idle - iowait


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks) of ``pid``: its own and its reaped children's (a child's
    time moves to its parent's when it is reaped), None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def tree_ticks(root: int) -> int:
    """CPU ticks of ``root`` and every process descended from it, so far."""
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (got := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = got
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def others(before: Snapshot, after: Snapshot, seconds: float) -> float:
    """Host CPUs' worth of other work between the snapshots (1.0: one core, all the time)."""
    busy = (after.busy_ticks - before.busy_ticks) - (after.ours_ticks - before.ours_ticks)
    return round(max(busy, 0) / HZ / seconds, 3) if seconds > 0 else 0.0
