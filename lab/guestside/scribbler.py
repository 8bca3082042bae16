"""Runs inside a guest: a reader that writes garbage over its whole ring mapping while frames
flow, as a buggy or hostile reader may. The module must take none of it on trust.

    python -m lab.guestside.scribbler --iface I --seconds S --seed N   (protocol.Scribble)

For SECONDS after the first frame: on each wakeup, random bytes at random
places of the ring mapping (records, indices, commit entries, flags: the
reader may write all of it), now and then a kick (poll) or a write() of
garbage so the module looks. Prints a ScribbleReport and exits; closing
must give every chunk back.
"""

from __future__ import annotations

import os
import random
import sys
import time

from lab.guestside import protocol
from lab.guestside.reports import ScribbleReport, dumps
from pysniff.errors import SniffError
from pysniff.reader import Reader

SPOTS = 16  # garbage writes per wakeup


def main(argv: list[str]) -> int:
    req = protocol.Scribble.from_argv(argv)
    rng = random.Random(req.seed)
    rounds = scribbled = kicks = writes = refused_writes = 0
    with Reader([req.iface], commit=False) as r:
        protocol.ready()
        if not r.wait(protocol.FIRST_FRAME_S):
            raise SystemExit("scribbler: no frame came")
        end = time.monotonic() + req.seconds
        size = len(r.ring)
        while time.monotonic() < end:
            r.wait(0.05)
            for _ in range(SPOTS):
                at = rng.randrange(size)
                n = min(rng.choice((1, 4, 8, 16, 64)), size - at)
                r.ring[at : at + n] = os.urandom(n)
                scribbled += n
            if rng.random() < 0.5:
                r.kick()
                kicks += 1
            if rng.random() < 0.2:
                try:
                    accepted = r.write_commits(os.urandom(16 * rng.randrange(1, 8)))
                    writes += 1
                    refused_writes += accepted == 0
                except SniffError:
                    refused_writes += 1
            rounds += 1
    print(dumps(ScribbleReport(rounds, scribbled, kicks, writes, refused_writes)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
