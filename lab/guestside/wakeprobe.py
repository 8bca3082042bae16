"""Runs inside a guest: watches NTA_COMMIT_NEED_WAKEUP come and go.

    python -m lab.guestside.wakeprobe IFACE STARVED_FILE READY_FILE

Reads frames and commits none until the module sets the need-wakeup flag
(the reader is at max_shared and its commit ring is empty), and creates
STARVED_FILE. Then it puts every chunk it holds in the commit ring and,
because the flag is set, makes the one poll() it asks for; the flag must be
clear after it. Then it reads AFTER more frames (the host sends them once
STARVED_FILE exists), committing as usual. Prints a WakeProbeReport.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lab.guestside.reports import WakeProbeReport, dumps
from pysniff.reader import Reader

FIRST_S = 60.0
WATCH_S = 30.0
AFTER = 32  # frames the host sends once the reader is starved


def main(argv: list[str]) -> int:
    iface, starved, ready = argv
    with Reader([iface], commit=False) as r:
        Path(ready).write_text("ready\n")
        held = 0
        deadline = time.monotonic() + FIRST_S
        while not r.need_wakeup() and time.monotonic() < deadline:
            r.wait(0.2)
            held += sum(1 for _ in r.frames())
        flag_set = r.need_wakeup()
        # Records published before the flag was set may still wait in the ring
        # (the flag can come between a read and the check): they are held too.
        held += sum(1 for _ in r.frames())
        Path(starved).write_text(f"{held}\n")
        syscalls = r.syscalls
        r.commit()  # into the commit ring; the flag asks for one poll() with it
        cleared = not r.need_wakeup()
        syscalls = r.syscalls - syscalls
        # Frames flow again once chunks came back (the host sends more now).
        r.auto_commit = True
        more = 0
        deadline = time.monotonic() + WATCH_S
        while more < AFTER and time.monotonic() < deadline:
            r.wait(0.2)
            more += sum(1 for _ in r.frames())
        stats = r.reader_stats()
        report = WakeProbeReport(
            held_when_set=held if flag_set else -1,
            cleared_by_commit=cleared,
            syscalls_to_clear=syscalls,
            frames_after=more,
            times_set=stats.need_wakeup,
        )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
