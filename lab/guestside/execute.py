"""Runs inside a guest: becomes another program, so the spawner can start native ones.

    python -m lab.guestside.execute PROGRAM [ARG...]

The spawner forks a warm Python for each request; this replaces it with
PROGRAM (tcpdump, ntadump), keeping its pid, its output files and the
spawner's exit-status bookkeeping.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
