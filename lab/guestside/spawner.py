"""Runs inside a guest: starts the lab's Python programs from a warm interpreter.

Under TCG a fresh Python takes seconds to start and import, more than most
scenarios take to run. This server imports pysniff and the guest-side
programs once, then forks a child for each request: the child starts in
milliseconds, already warm, with its own pid, so the lab can signal it.

Requests are lines written to a FIFO, each ``shlex``-quoted:

    ID STDOUT STDERR READY MODULE [ARG...]

The child runs ``python -m MODULE ARG...`` (stdin /dev/null, stdout and
stderr to the two paths), with ``$NTALAB_READY`` set to READY unless it is
``-`` (the readiness protocol, ``lab.guestside.protocol``). ``ID.pid``
appears in the state directory once it runs, and ``ID.rc`` when it ended:
its exit status as a shell gives it (128 + N for signal N). Both files are
written whole (rename), so a reader never sees half of one.

    python -S -m lab.guestside.spawner FIFO STATE_DIR
"""

from __future__ import annotations

import importlib
import os
import runpy
import shlex
import signal
import sys
import threading
import time

from lab.guestside.protocol import READY_ENV, write_whole

# What children run: imported here once, so that a fork finds them loaded.
WARM = (
    "pysniff.cli", "lab.guestside.capture", "lab.guestside.afpacket", "lab.guestside.udpecho",
    "lab.guestside.meter", "lab.guestside.tcplisten", "lab.guestside.execute",
    "lab.guestside.udpsink", "lab.guestside.poolscan", "lab.guestside.scribbler",
    "lab.guestside.wakeprobe", "lab.guestside.lifecycle", "lab.guestside.httpd",
)  # fmt: skip
NO_READY = "-"


def child(stdout: str, stderr: str, ready: str, module: str, args: list[str]) -> None:
    """In the forked child: become ``python -m module args``; never returns."""
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        os.environ.pop(READY_ENV, None)
        if ready != NO_READY:
            os.environ[READY_ENV] = ready
        sys.argv = [module, *args]
        loaded = sys.modules.get(module)
        if loaded is not None and callable(getattr(loaded, "main", None)):
            # Already imported (WARM): its main, as ``python -m`` would call it
            # (runpy would run the module a second time, and warn).
            sys.exit(loaded.main(args))
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def reap(state: str, ids: dict[int, str], lock: threading.Lock) -> None:
    """Writes ID.rc for each child that ends."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.05)
            continue
        code = os.waitstatus_to_exitcode(status)
        with lock:
            request = ids.pop(pid, None)
        if request is not None:
            write_whole(
                os.path.join(state, f"{request}.rc"), f"{code if code >= 0 else 128 - code}\n"
            )


def serve(fifo: str, state: str) -> None:
    ids: dict[int, str] = {}
    lock = threading.Lock()
    threading.Thread(target=reap, args=(state, ids, lock), daemon=True).start()
    write_whole(os.path.join(state, "ready"), f"{os.getpid()}\n")
    while True:
        with open(fifo) as requests:  # EOF when the writer closes: reopen and wait
            for line in requests:
                words = shlex.split(line)
                if len(words) < 5:
                    print(f"spawner: bad request {line!r}", file=sys.stderr, flush=True)
                    continue
                request, stdout, stderr, ready, module, *args = words
                with lock:  # the reaper must not see the pid before it is known
                    pid = os.fork()
                    if pid == 0:
                        child(stdout, stderr, ready, module, args)
                    ids[pid] = request
                write_whole(os.path.join(state, f"{request}.pid"), f"{pid}\n")


def main(argv: list[str]) -> int:
    fifo, state = argv
    # A process group of its own, which its children join: the host ends them all at once.
    os.setpgid(0, 0)
    for name in WARM:
        importlib.import_module(name)
    serve(fifo, state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
