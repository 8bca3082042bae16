"""Runs inside a guest: watches NTA_COMMIT_NEED_WAKEUP come and go.

    python -m lab.guestside.wakeprobe --iface I --starved FILE   (protocol.WakeProbe)

Reads frames and commits none until the module sets the need-wakeup flag
(the reader is at max_shared and its commit ring is empty). Then it puts
every chunk it holds in the commit ring and, because the flag is set, makes
the one poll() it asks for; the flag must be clear after it. Only then it
creates STARVED_FILE, and reads AFTER more frames (the host sends them once
STARVED_FILE exists), committing as usual. Sent before the commit, they
would find the reader still at its limit and go to the stack unseen (seen
once on a loaded host, when the file came first). Prints a WakeProbeReport.
"""

from __future__ import annotations

import sys
import time

from lab.guestside import protocol
from lab.guestside.reports import WakeProbeReport, dumps
from pysniff.reader import Reader

WATCH_S = 30.0
AFTER = 32  # frames the host sends once the reader is starved


def main(argv: list[str]) -> int:
    req = protocol.WakeProbe.from_argv(argv)
    iface = req.iface
    with Reader([iface], commit=False) as r:
        protocol.ready()
        held = 0
        deadline = time.monotonic() + protocol.FIRST_FRAME_S
        while not r.need_wakeup() and time.monotonic() < deadline:
            r.wait(0.2)
            held += sum(1 for _ in r.frames())
        flag_set = r.need_wakeup()
        # Records published before the flag was set may still wait in the ring
        # (the flag can come between a read and the check): they are held too.
        held += sum(1 for _ in r.frames())
        syscalls = r.syscalls
        r.commit()  # into the commit ring; the flag asks for one poll() with it
        cleared = not r.need_wakeup()
        syscalls = r.syscalls - syscalls
        protocol.write_whole(str(req.starved), f"{held}\n")
        # Frames flow again once chunks came back (the host sends more now).
        not_shared = r.dev_stats(iface).not_shared
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
            not_shared_after=r.dev_stats(iface).not_shared - not_shared,
            times_set=stats.need_wakeup,
        )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
