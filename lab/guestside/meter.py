"""Runs inside a guest: measure one sniffer's cost over a window while the host injects.

Starts the sniffer, waits until it is ready (through the lab's protocol,
``protocol.ready()``, which pysniff and the AF_PACKET reader speak, or a
line on its stderr such as tcpdump's "listening on"), then is ready itself
(the same protocol). With ``--hold STARTED_FILE`` it then waits for SIGUSR1
before the window starts (and writes STARTED_FILE when it has): the host
does what must come between the sniffer's readiness and the load (the link
bounce that makes an NTA reader's device receive into its pool) outside the
window. Without it, the window starts as it is ready.

Over the window, from its start to the sniffer's exit:

- the sniffer's CPU time, read from /proc/<pid>/schedstat (at exit, before
  the zombie is reaped), so interpreter start-up, slow under TCG, is not
  charged to it;
- its system calls, counted by the kernel's tracing (a hist trigger on
  raw_syscalls:sys_enter filtered by its pid): the same count for any
  sniffer, C or Python, NTA or AF_PACKET, whatever the sniffer says of
  itself. None where tracefs or hist triggers are missing;
- its voluntary context switches: each is a sleep, so for a reader blocking
  in poll() one per wakeup; and the involuntary ones;
- the guest's /proc/stat deltas (softirq above all).

On SIGTERM the sniffer gets SIGINT, so it reports and exits as tcpdump does.
Prints one JSON object (MeterReport), the sniffer's stdout and stderr in it.
Without a command it measures the window alone: the no-sniffer baseline.

    python -m lab.guestside.meter [--hold STARTED_FILE] [--wait-line TEXT] [-- CMD...]

(``protocol.Meter``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lab.guestside import protocol
from lab.guestside.reports import MeterReport, dumps

USER_HZ = os.sysconf("SC_CLK_TCK")
COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")
TRACEFS = Path("/sys/kernel/tracing")
SYS_ENTER = "events/raw_syscalls/sys_enter"


def cpu_times() -> dict[str, float]:
    """Seconds in each /proc/stat column, all CPUs together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:8]
    return {n: int(v) / USER_HZ for n, v in zip(COLUMNS, fields, strict=True)}


def process_cpu(pid: int) -> float:
    """CPU seconds ``pid`` has run, as the scheduler measured it.

    /proc/<pid>/schedstat's first field is the scheduler's exact runtime in
    ns. utime + stime (the fallback) are sampled at each tick: a reader that
    wakes on a timer, in step with the tick, is charged far more than it ran.
    """
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return sum(ticks(pid)) / USER_HZ


def ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks charged to ``pid``: sampled, but their ratio over a
    long window says where its time goes (its own code, or the kernel on its behalf)."""
    # The comm field may hold spaces, so the fields are split after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of ``pid`` so far: a voluntary one is a
    sleep, so each wakeup of a reader that blocks in poll() is one."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            got[key] = int(value)
    return got["voluntary_ctxt_switches"], got["nonvoluntary_ctxt_switches"]


# -- system calls, counted by the kernel ---------------------------------------------------
#
# Why a hist trigger, not strace -c: strace stops the sniffer at every system
# call (ptrace), which changes the very CPU cost measured beside it; a hist
# trigger counts in the kernel, in the syscall entry path, at the cost of a
# tracepoint and a filter per call, for every sniffer alike. Why not the
# readers' own counts: tcpdump and the AF_PACKET reader keep none, and a
# reader's count of its own calls is the thing being checked.


def hist_trigger(pid: int) -> str:
    """The trigger counting ``pid``'s system calls. Its thread only: every sniffer
    measured here is single-threaded (common_pid is the thread's id)."""
    return f"hist:keys=common_pid:vals=hitcount if common_pid == {pid}"


_HIST_ENTRY = re.compile(
    # "{ common_pid:       1234 } hitcount:        567", or with .execname
    # "{ common_pid: python3          [      1234] } hitcount: 567"
    r"\{\s*common_pid:\s*(?:[^\[\}]*\[\s*)?(\d+)\]?\s*\}\s*hitcount:\s*(\d+)"
)
_HIST_HITS = re.compile(r"^\s*Hits:\s*(\d+)", re.MULTILINE)
_HIST_DROPPED = re.compile(r"^\s*Dropped:\s*(\d+)", re.MULTILINE)


def parse_hist(text: str, pid: int) -> int | None:
    """``pid``'s hit count in a hist file's text; None if the text is no complete histogram.

    A histogram with no entry for ``pid`` (it made no call) counts 0, but only
    when its Totals say nothing was dropped: a dropped entry may have been it.
    """
    hits = [int(n) for p, n in _HIST_ENTRY.findall(text) if int(p) == pid]
    if hits:
        return sum(hits)
    totals = _HIST_HITS.search(text)
    dropped = _HIST_DROPPED.search(text)
    if totals is None or (dropped is not None and int(dropped.group(1)) > 0):
        return None
    return 0


@dataclass
class SyscallCounter:
    """A hist trigger on raw_syscalls:sys_enter for one pid, from ``start`` to ``stop``."""

    pid: int
    tracefs: Path = TRACEFS
    error: str | None = None
    _armed: bool = False

    @property
    def event(self) -> Path:
        return self.tracefs / SYS_ENTER

    def start(self) -> None:
        try:
            # Mounted where it is not: on a mount point of its own, nowhere else.
            if not self.event.is_dir() and self.tracefs.is_dir():
                subprocess.run(
                    ["mount", "-t", "tracefs", "nodev", str(self.tracefs)],
                    capture_output=True,
                    check=False,
                )
            # Appended, never truncated: opening a trigger file with O_TRUNC
            # removes every trigger the event has.
            with (self.event / "trigger").open("a") as f:
                f.write(hist_trigger(self.pid) + "\n")
            self._armed = True
        except OSError as e:
            self.error = f"no syscall count: {self.event}/trigger: {e}"

    def stop(self) -> int | None:
        """The count since ``start`` (None if it could not count); the trigger removed."""
        if not self._armed:
            return None
        count = None
        try:
            count = parse_hist((self.event / "hist").read_text(), self.pid)
            if count is None:
                self.error = "no syscall count: the hist file has no complete histogram"
        except OSError as e:
            self.error = f"no syscall count: {self.event}/hist: {e}"
        try:
            with (self.event / "trigger").open("a") as f:
                f.write("!" + hist_trigger(self.pid) + "\n")
        except OSError as e:
            self.error = f"the syscall trigger stays: {e}"
        self._armed = False
        return count


# -- the sniffer ----------------------------------------------------------------------------


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped so its stat stays readable."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def collect(stream: IO[str], into: list[str], marker: str | None, seen: threading.Event) -> None:
    for line in stream:
        into.append(line)
        if marker and marker in line:
            seen.set()


def sniffer_ready_file() -> Path:
    """Where the sniffer says it is ready (the protocol, one level down): beside this
    program's own ready file, else in a directory of its own."""
    own = os.environ.get(protocol.READY_ENV)
    path = Path(f"{own}.sniffer") if own else Path(tempfile.mkdtemp(prefix="meter-")) / "ready"
    path.unlink(missing_ok=True)
    return path


def main(argv: list[str]) -> int:
    args = protocol.Meter.from_argv(argv)
    stop, go = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: go.set())
    proc = None
    out: list[str] = []
    err: list[str] = []
    readers: list[threading.Thread] = []
    if args.cmd:
        # A sniffer that speaks the protocol tells this program, not the host.
        wait_file = None if args.wait_line else sniffer_ready_file()
        env = protocol.without_ready()
        if wait_file is not None:
            env[protocol.READY_ENV] = str(wait_file)
        proc = subprocess.Popen(
            list(args.cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        seen = threading.Event()
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=collect, args=(proc.stdout, out, None, seen)),
            threading.Thread(target=collect, args=(proc.stderr, err, args.wait_line, seen)),
        ]
        for t in readers:
            t.start()
        while not exited(proc.pid) and not stop.is_set():
            if (wait_file and wait_file.exists()) or seen.is_set():
                break
            time.sleep(0.02)
    if args.hold is not None:
        protocol.ready()
        while not go.wait(0.05) and not stop.is_set():
            if proc is not None and exited(proc.pid):
                break
    # The window starts: the syscall trigger first (arming it takes a moment),
    # then the counters it is measured by, read as close together as can be.
    counter = SyscallCounter(proc.pid, TRACEFS) if proc is not None else None
    if counter is not None:
        counter.start()
    cpu_at_start = process_cpu(proc.pid) if proc is not None else 0.0
    ticks_at_start = ticks(proc.pid) if proc is not None else (0, 0)
    switches_at_start = switches(proc.pid) if proc is not None else (0, 0)
    before = cpu_times()
    start = time.monotonic()
    if args.hold is not None:
        args.hold.write_text("started\n")
    else:
        protocol.ready()
    while not stop.wait(0.05):
        if proc is not None and exited(proc.pid):
            break
    rc, cpu, vol, invol, syscalls = None, 0.0, 0, 0, None
    user = system = 0
    if proc is not None:
        if not exited(proc.pid):
            proc.send_signal(signal.SIGINT)
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        # Still unreaped: the zombie's /proc/<pid> holds its final times and switches.
        cpu = process_cpu(proc.pid) - cpu_at_start
        user, system = (b - a for a, b in zip(ticks_at_start, ticks(proc.pid), strict=True))
        now = switches(proc.pid)
        vol, invol = now[0] - switches_at_start[0], now[1] - switches_at_start[1]
    after = cpu_times()
    elapsed = time.monotonic() - start
    extra: dict[str, str] = {}
    if counter is not None:
        syscalls = counter.stop()  # a zombie makes no calls: read after its exit is the same
        if counter.error:
            extra["syscalls_error"] = counter.error
    if proc is not None:
        rc = proc.wait()
        for t in readers:
            t.join(timeout=10)
    report = MeterReport(
        exit=rc,
        sniffer_cpu_s=cpu,
        sniffer_user_ticks=user,
        sniffer_system_ticks=system,
        elapsed_s=elapsed,
        cpu_s={k: round(after[k] - before[k], 3) for k in COLUMNS},
        stdout="".join(out),
        stderr="".join(err)[-4000:],
        voluntary_switches=vol,
        involuntary_switches=invol,
        syscalls=syscalls,
        extra=extra,
    )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
