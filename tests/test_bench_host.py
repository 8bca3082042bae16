"""The bench's measure of other work on the host: the bench's own tree (its children
included) is told apart from processes outside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from lab.bench import host

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"


def test_our_children_are_in_the_tree_and_an_orphan_is_not() -> None:
    me = os.getpid()
    t0 = host.tree_ticks(me)
    subprocess.run([sys.executable, "-c", BURN], check=True)  # a child: ours (reaped)
    t1 = host.tree_ticks(me)
    assert t1 - t0 >= 0.5 * host.HZ, (t0, t1)
    # A grandchild whose parent exits at once: adopted by init, no longer ours.
    spawn = f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {BURN!r}]).pid)"
    orphan = int(subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True,
                                check=True).stdout)  # fmt: skip
    while host._stat(orphan) is not None:
        time.sleep(0.05)
    assert host.tree_ticks(me) - t1 < 0.2 * host.HZ


def test_others_is_the_host_busy_time_less_ours() -> None:
    before = host.Snapshot(busy_ticks=1000, ours_ticks=300)
    after = host.Snapshot(busy_ticks=1000 + 4 * host.HZ, ours_ticks=300 + 3 * host.HZ)
    assert host.others(before, after, 2.0) == 0.5  # 1 CPU-s of other work over 2 s
    assert host.others(after, after, 0.0) == 0.0
