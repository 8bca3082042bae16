"""Runs inside a guest: one reader through attaching, detaching, and its devices going.

    python -m lab.guestside.lifecycle --iface I --cycles N --going I --steps DIR

(``protocol.Lifecycle``).

In steps, each announced by creating STEPS_DIR/<step> and waiting for the host's
STEPS_DIR/<step>-done (the host sends frames or changes the guest meanwhile):

1. ``cycles``: attach and detach IFACE CYCLES times (more than the 8 devices a
   reader may have attached at once), then attach it: the host sends frames,
   which are read and committed; NTA_IOC_DEV_STATS must give the live
   attachment's counts.
2. ``detached``: detach IFACE; the host sends frames again: no record may come,
   and the device's counters stay as they were.
3. The mappings are data: mapping the pool executable, or making the ring
   executable with mprotect(), is refused.
4. ``going``: attach GOING_IFACE (a veth the host then deletes): poll() must
   say the reader is hung up (POLLHUP) once it is gone.

Prints a LifecycleReport.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import select
import sys
import time
from pathlib import Path

from lab.guestside import protocol
from lab.guestside.reports import LifecycleReport, dumps
from pysniff.device import OsDevice
from pysniff.errors import SniffError
from pysniff.reader import Reader

STEP_S = 120.0  # how long the host may take over its part of a step
PROT_EXEC = 0x4


def step(steps: Path, name: str) -> None:
    """Announce ``name`` and wait for the host to be done with its part."""
    (steps / name).write_text("ready\n")
    done, deadline = steps / f"{name}-done", time.monotonic() + STEP_S
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"lifecycle: the host never finished {name}")
        time.sleep(0.05)


def read_all(r: Reader) -> int:
    got = 0
    while r.wait(protocol.IDLE_S):
        got += sum(1 for _ in r.frames())
    r.commit()
    return got


def fd_of(r: Reader) -> int:
    assert isinstance(r.dev, OsDevice)
    return r.dev.fd


def mapping_refused(r: Reader) -> tuple[bool, bool]:
    """(an executable mapping of its first pool refused, mprotect(PROT_EXEC) of the ring
    refused)."""
    pool = next((p for p in r.pool_slots() if p.bound), None)
    if pool is None:
        raise SystemExit("lifecycle: the reader has no pool bound: attach first")
    try:
        mmap.mmap(fd_of(r), pool.mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | PROT_EXEC,
                  offset=pool.mmap_offset).close()  # fmt: skip
        map_refused = False
    except OSError:
        map_refused = True
    libc = ctypes.CDLL(None, use_errno=True)
    address = ctypes.addressof(ctypes.c_char.from_buffer(r.ring))
    rc = libc.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(len(r.ring)),
                       mmap.PROT_READ | mmap.PROT_WRITE | PROT_EXEC)  # fmt: skip
    return map_refused, rc != 0 and ctypes.get_errno() == errno.EACCES


def hung_up(r: Reader, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd_of(r), select.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, revents in poller.poll(1000):
            if revents & select.POLLHUP:
                return True
        for _ in r.frames():  # anything readable is read, so that poll() blocks again
            pass
    return False


def main(argv: list[str]) -> int:
    req = protocol.Lifecycle.from_argv(argv)
    iface, going, steps = req.iface, req.going, req.steps
    cycled, error = 0, ""
    with Reader() as r:
        try:
            for _ in range(req.cycles):
                r.attach(iface)
                r.detach(iface)
                cycled += 1
        except SniffError as e:
            error = str(e)
        r.attach(iface)
        step(steps, "cycles")
        got = read_all(r)
        live = r.dev_stats(iface)
        r.detach(iface)
        producer = r.producer()
        step(steps, "detached")
        time.sleep(protocol.IDLE_S)
        after = r.producer() - producer
        gone = r.dev_stats(iface)
        map_refused, mprotect_refused = mapping_refused(r)
        r.attach(going)
        step(steps, "going")
        hup = hung_up(r, STEP_S)
    report = LifecycleReport(
        cycles=cycled,
        attach_error=error,
        frames=got,
        received=live.received,
        published=live.published,
        records_after_detach=after,
        received_after_detach=gone.received - live.received,
        exec_map_refused=map_refused,
        exec_mprotect_refused=mprotect_refused,
        hung_up=hup,
    )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
