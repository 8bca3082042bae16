"""A stopped run leaves no QEMU behind, even one in a session of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.runner import kill_qemu_of
from lab.wait import wait_until


def fake_qemu(gdir: Path) -> subprocess.Popen[bytes]:
    """A process named like QEMU whose arguments name the guest's directory, in a new session."""
    code = "import time; time.sleep(300)"
    return subprocess.Popen(
        ["bash", "-c", f'exec -a qemu-system-x86_64 {sys.executable} -c "{code}" "$0"',
         f"path={gdir.resolve()}/share"],
        start_new_session=True,
    )  # fmt: skip


def test_the_guests_qemu_is_killed_and_no_other(tmp_path: Path) -> None:
    mine, other = tmp_path / "debian-6.1_all", tmp_path / "debian-6.12_all"
    ours, theirs = fake_qemu(mine), fake_qemu(other)
    try:
        wait_until(lambda: kill_qemu_of(mine) == [ours.pid], 10, "the fake QEMU to be found")
        assert ours.wait(10) == -9
        assert theirs.poll() is None
    finally:
        for p in (ours, theirs):
            if p.poll() is None:
                os.kill(p.pid, 9)
                p.wait()
