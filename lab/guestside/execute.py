"""Runs inside a guest: a native program (tcpdump, ntadump, a shell loop) for the spawner.

    python -m lab.guestside.execute [--ready-line TEXT] -- PROGRAM [ARG...]

(``protocol.Execute``.) The spawner forks a warm Python for each request.
Without ``--ready-line`` this becomes PROGRAM (exec), keeping its pid, its
output files and the spawner's exit-status bookkeeping. With it, PROGRAM
runs as its child: its stderr is copied to this program's stderr line by
line, and the first line holding TEXT (tcpdump's and ntadump's "listening
on") is the program's readiness, turned into the lab's one protocol
(``protocol.ready()``). SIGTERM, SIGINT and SIGUSR1 are passed on, and this
program ends as its child did (the same exit status, or the same signal),
so that the host sees PROGRAM's status either way.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from lab.guestside import protocol

PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _die_with_parent() -> None:
    """In the child: killed if this supervisor is (a SIGKILL cannot be passed on)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(cmd: list[str], ready_line: str) -> int:
    child = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, env=protocol.without_ready(), preexec_fn=_die_with_parent
    )
    for sig in FORWARDED:
        signal.signal(sig, lambda signo, _frame: child.send_signal(signo))
    assert child.stderr is not None
    told = False
    for raw in child.stderr:
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        if not told and ready_line.encode() in raw:
            protocol.ready()
            told = True
    rc = child.wait()
    if rc < 0:  # ended by a signal: end by the same one
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    return rc


def main(argv: list[str]) -> int:
    req = protocol.Execute.from_argv(argv)
    if not req.cmd:
        raise SystemExit("execute: no program given (after --)")
    if req.ready_line is None:
        os.execvp(req.cmd[0], list(req.cmd))
    return supervise(list(req.cmd), req.ready_line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
