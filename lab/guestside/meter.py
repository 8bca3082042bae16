"""Runs inside a guest: measure what capture costs over a window while the host loads the NIC.

Starts the sniffer (with ``--copies N``, N copies of it at once: several
readers of one device), waits until it is ready (every copy), then is
ready itself (the lab's protocol, ``protocol.ready()``). The sniffer says
so through the same protocol one level down (pysniff and the AF_PACKET reader call ``ready()``;
the meter hands it a ready file of its own, in its scratch directory, so the
host only ever sees the meter's), or by a line on its stderr
(``--wait-line``: tcpdump's "listening on"). With ``--hold STARTED_FILE`` it
then waits for SIGUSR1 before the window starts (and writes STARTED_FILE
when it has): the host does what must come between the sniffer's readiness
and the load (the link bounce that makes an NTA reader's device receive into
its pool) outside the window. Without it, the window starts as the meter is
ready.

Over the window, from its start to its end (below):

- the whole guest's busy CPU time, from /proc/stat read at both ends: every
  CPU, every context (user, system, softirq, hardirq, kworkers), as elapsed
  x CPUs online - idle - iowait (the host does that sum, from both reads);
- the NIC's received frames (``--iface``) and those it missed (no buffer for
  them), from its statistics, and the IP packets the stack received
  (/proc/net/snmp's InReceives: after GRO, so under a TCP load it says how
  many merged frames the wire's became);
- the sniffer's CPU time, read from /proc/<pid>/schedstat (at exit, before
  the zombie is reaped), so its start-up is not charged to it;
- its system calls, counted by the kernel's tracing (a hist trigger on
  raw_syscalls:sys_enter filtered by its pid): the same count for any
  sniffer, C or Python, NTA or AF_PACKET, whatever the sniffer says of
  itself. None where tracefs or hist triggers are missing;
- its voluntary context switches: each is a sleep, so for a reader blocking
  in poll() one per wakeup; and the involuntary ones.

With copies, each of those is every copy's, summed (one hist trigger for all
their pids), and the report holds each copy's exit status and output
(``MeterReport.copies``).

The meter itself costs nothing in the window while the load runs: it sleeps
in sigwaitinfo() until the sniffer exits (SIGCHLD) or the host says the load
is over (SIGTERM), so every trial's window holds the same meter, asleep.
Signals are blocked and taken synchronously, never by a Python handler: a
handler that sets a threading.Event deadlocks when it runs while the main
thread holds that Event's lock in wait() (what left a trial's window
unopened, its ready file written, until the host gave up).

**The window's end.** When the sniffer exits with the load's frames (its
count; with copies, once every copy has); or, after SIGTERM, once the NIC
is done: its counters (rx_packets + rx_missed_errors) have taken
``--expect-rx`` frames since the window began and stood still for STILL_S.
They are read every SETTLE_POLL_S meanwhile, the meter's only work in a
window, the same in every trial of a frame load. A sniffer still running
then has ``--drain-s`` to exit on its own (its batching delay: a block
timeout; the meter sleeps, SIGCHLD wakes it; none without
``--expect-rx``: the host has waited after a load it cannot count), then
gets SIGINT (every copy still running, at once), so it reports and exits
as tcpdump does: frames it missed are counted as missed (it says so), not
waited for. Before, a reader that had missed frames held the window open
until the host gave up on it (20 s), idle time that diluted the round's
figures.

A Python sniffer (``--module``) is forked from this warm interpreter, as the
spawner starts the lab's programs (a fresh Python takes seconds under TCG);
any other is executed. Its stdout and stderr go to files in the guest's /tmp
(no 9p traffic in the window). Prints one JSON object (MeterReport), each
copy's stdout and stderr in it. Without a command it measures the window
alone: the no-sniffer baseline.

    python -m lab.guestside.meter [--hold STARTED_FILE] [--iface IFACE] [--expect-rx N]
        [--drain-s S] [--wait-line TEXT] [--module MODULE] [--copies N] [--tracefs DIR]
        [--net DIR] [-- ARGS...]

(``protocol.Meter``; ``--tracefs``, ``--net``: where tracefs and the NICs'
statistics are, host tests give directories of their own.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab.guestside import protocol, spawner
from lab.guestside.reports import CpuStat, MeterReport, SnifferOutput, dumps

USER_HZ = os.sysconf("SC_CLK_TCK")
TRACEFS = Path("/sys/kernel/tracing")
NET = Path("/sys/class/net")
SYS_ENTER = "events/raw_syscalls/sys_enter"
# The signals the meter acts on, all blocked and taken with sigtimedwait().
GO, STOP, CHILD = signal.SIGUSR1, signal.SIGTERM, signal.SIGCHLD
WATCHED = frozenset({GO, STOP, CHILD})
READY_POLL_S = 0.02  # before the window: how often a ready file or line is looked for
SETTLE_POLL_S = 0.01  # after SIGTERM: how often the NIC's counters are read
# ... unchanged this long once they reached the count, the NIC is done: far longer than
# a NAPI poll, which passes its frames up and then adds them to the counters
STILL_S = 0.05
SETTLE_S = 30.0  # ... and how long the meter waits for that at most
EXIT_S = 30.0  # a sniffer given SIGINT has this long to report, then SIGKILL


def cpu_stat() -> tuple[float, CpuStat]:
    """/proc/stat now, and when: the monotonic time halfway through its read (under TCG
    a read of /proc/stat takes milliseconds)."""
    t0 = time.monotonic()
    text = Path("/proc/stat").read_text()
    t1 = time.monotonic()
    return (t0 + t1) / 2, CpuStat.parse(text, USER_HZ)


def ip_packets() -> int | None:
    """IP packets the stack received so far (every interface): one per skb, after GRO."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return None
    names, values = (line for line in lines if line and line[0] == "Ip:")
    return int(values[names.index("InReceives")])


def nic_counts(args: protocol.Meter) -> tuple[int, int] | None:
    """``--iface``'s frames so far: (received, missed for want of a buffer)."""
    if args.iface is None:
        return None
    stats = (args.net or NET) / args.iface / "statistics"
    rx, missed = ((stats / name).read_text() for name in ("rx_packets", "rx_missed_errors"))
    return int(rx), int(missed)


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


def hist_trigger(pids: tuple[int, ...]) -> str:
    """The trigger counting the system calls of ``pids`` (the copies of a sniffer), an
    entry each. Their threads only: every sniffer measured here is single-threaded
    (common_pid is the thread's id)."""
    return "hist:keys=common_pid:vals=hitcount if " + " || ".join(
        f"common_pid == {pid}" for pid in pids
    )


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
    """A hist trigger on raw_syscalls:sys_enter for some pids, from ``start`` to ``stop``:
    one trigger, whatever their number (a trigger per pid would print a histogram each,
    their totals apart)."""

    pids: tuple[int, ...]
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
                f.write(hist_trigger(self.pids) + "\n")
            self._armed = True
        except OSError as e:
            self.error = f"no syscall count: {self.event}/trigger: {e}"

    def stop(self) -> int | None:
        """The count since ``start``, every pid's summed (None if it could not count); the
        trigger removed."""
        if not self._armed:
            return None
        count = None
        try:
            text = (self.event / "hist").read_text()
            each = [parse_hist(text, pid) for pid in self.pids]
            count = None if None in each else sum(n or 0 for n in each)
            if count is None:
                self.error = "no syscall count: the hist file has no complete histogram"
        except OSError as e:
            self.error = f"no syscall count: {self.event}/hist: {e}"
        try:
            with (self.event / "trigger").open("a") as f:
                f.write("!" + hist_trigger(self.pids) + "\n")
        except OSError as e:
            self.error = f"the syscall trigger stays: {e}"
        self._armed = False
        return count


# -- signals, taken synchronously ----------------------------------------------------------


class Signals:
    """GO, STOP and CHILD, blocked from the meter's start and taken with sigtimedwait().

    Nothing runs asynchronously: a signal is only ever looked at where the
    meter waits, so none can land in the middle of anything (see the module
    docstring). Blocked from the start, none is lost either: one sent before
    the meter waits for it stays pending until it does.
    """

    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        self.go = False
        self.stop = False

    def wait(self, timeout: float | None) -> None:
        """Until one of them comes (or ``timeout`` passes); notes every one pending."""
        info = (
            signal.sigwaitinfo(WATCHED)
            if timeout is None
            else signal.sigtimedwait(WATCHED, timeout)
        )
        while info is not None:
            self.go |= info.si_signo == GO
            self.stop |= info.si_signo == STOP
            info = signal.sigtimedwait(WATCHED, 0)


# -- the sniffer, in one or more copies -----------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One copy of the sniffer: its process, the files it writes, and how it says it is
    ready (its own ready file, or with ``ready`` None a line on its stderr)."""

    index: int
    pid: int
    out: Path
    err: Path
    ready: Path | None

    def name(self, copies: int) -> str:
        """How a message names it: "the sniffer", or which copy of it."""
        return "the sniffer" + (f" (copy {self.index + 1} of {copies})" if copies > 1 else "")


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped so its stat stays readable."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def all_exited(pids: list[int]) -> bool:
    """Whether every copy has exited (no copy: never, the window ends when told)."""
    return bool(pids) and all(exited(pid) for pid in pids)


def has_sniffer(args: protocol.Meter) -> bool:
    return args.module is not None or bool(args.cmd)


def launch(args: protocol.Meter, out: Path, err: Path, ready: Path | None) -> int:
    """The sniffer, forked: a module of this warm interpreter, or a program executed; with
    ``ready``, that is its ready file (``$NTALAB_READY``), never the meter's own."""
    pid = os.fork()
    if pid:
        return pid
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        told = spawner.NO_READY if ready is None else str(ready)
        if args.module is not None:
            spawner.child(str(out), str(err), told, args.module, list(args.cmd))  # never returns
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores it; a program must not
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.dup2(null, 0)
        env = protocol.without_ready()
        if ready is not None:
            env[protocol.READY_ENV] = str(ready)
        os.execvpe(args.cmd[0], list(args.cmd), env)
    except BaseException as e:
        os.write(2, f"meter: cannot run {args.cmd[:1]}: {e}\n".encode())
    os._exit(127)


def start_copies(args: protocol.Meter, scratch: Path) -> list[Copy]:
    """``--copies`` copies of the sniffer, each with its own output files and ready file in
    the meter's scratch directory (the host only ever sees the meter's)."""
    copies = []
    for i in range(args.copies):
        out, err = scratch / f"stdout-{i}", scratch / f"stderr-{i}"
        ready = None if args.wait_line is not None else scratch / f"ready-{i}"
        copies.append(Copy(i, launch(args, out, err, ready), out, err, ready))
    return copies


def tail(path: Path, limit: int = 4000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else ""


def is_ready(args: protocol.Meter, copy: Copy) -> bool:
    """Whether the copy said so: its ready file, or the line on its stderr."""
    if copy.ready is not None:
        return copy.ready.exists()
    assert args.wait_line is not None
    return args.wait_line in tail(copy.err, 1 << 20)


def end_sniffers(pids: list[int], sig: Signals) -> None:
    """SIGINT to every copy still running (each reports and exits), all at once; SIGKILL
    to those that have not after EXIT_S. Left unreaped."""
    running = [pid for pid in pids if not exited(pid)]
    for pid in running:
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + EXIT_S
    while not all(exited(pid) for pid in running):
        if time.monotonic() >= deadline:
            for pid in running:
                if not exited(pid):
                    os.kill(pid, signal.SIGKILL)
                    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            return
        sig.wait(1.0)


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def not_ready(args: protocol.Meter, copies: list[Copy], sig: Signals) -> str | None:
    """Until every copy is ready; None then. If one exits first, or the host stops the
    meter, every copy is ended and reaped: what went wrong, naming the copy."""
    while not all(is_ready(args, c) for c in copies):
        gone = next((c for c in copies if exited(c.pid)), None)
        if gone is not None or sig.stop:
            named = gone or next((c for c in copies if not is_ready(args, c)), copies[0])
            why = "exited" if gone is not None else "stopped"
            end_sniffers([c.pid for c in copies], sig)
            status = [reap(c.pid) for c in copies][named.index]
            return (
                f"{named.name(len(copies))} {why} before it was ready (status {status}): "
                f"{tail(named.err)}"
            )
        sig.wait(READY_POLL_S)
    return None


def nic_done(
    args: protocol.Meter, nic0: tuple[int, int] | None, sig: Signals, pids: list[int]
) -> None:
    """After SIGTERM: until the NIC has taken ``--expect-rx`` frames in the window
    (received or missed) and its counters stood still for STILL_S, or every copy of the
    sniffer exited (SETTLE_S at most)."""
    if nic0 is None or args.expect_rx <= 0:
        return
    deadline = time.monotonic() + SETTLE_S
    last, since = -1, 0.0
    while time.monotonic() < deadline and not all_exited(pids):
        now, at = sum(nic_counts(args) or nic0) - sum(nic0), time.monotonic()
        if now != last:
            last, since = now, at
        elif now >= args.expect_rx and at - since >= STILL_S:
            return
        sig.wait(SETTLE_POLL_S)


def drain(pids: list[int], seconds: float, sig: Signals) -> None:
    """Up to ``seconds`` for every copy to exit on its own: asleep, SIGCHLD wakes it."""
    deadline = time.monotonic() + seconds
    while not all_exited(pids) and (left := deadline - time.monotonic()) > 0:
        sig.wait(left)


def main(argv: list[str]) -> int:
    args = protocol.Meter.from_argv(argv)
    if args.copies < 1 or (args.copies > 1 and not has_sniffer(args)):
        what = "a sniffer to copy" if args.copies > 1 else "1 or more"
        print(f"meter: --copies {args.copies}: needs {what}", file=sys.stderr)
        return 2
    sig = Signals()  # first: from here on no GO or STOP is lost, and none interrupts
    scratch = Path(tempfile.mkdtemp(prefix="ntalab-meter-"))
    try:
        return measure(args, sig, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args: protocol.Meter, sig: Signals, scratch: Path) -> int:
    """The window around every copy of the sniffer (none: the window alone), their
    outputs and ready files in ``scratch``."""
    copies = start_copies(args, scratch) if has_sniffer(args) else []
    pids = [c.pid for c in copies]
    failed = not_ready(args, copies, sig)
    if failed is not None:
        print(f"meter: {failed}", file=sys.stderr)
        return 1
    if args.hold is not None:
        protocol.ready()
        while not (sig.go or sig.stop or all_exited(pids)):
            sig.wait(None)
    # The window starts: the syscall trigger first (arming it takes a moment),
    # then the counters it is measured by, read as close together as can be.
    counter = SyscallCounter(tuple(pids), args.tracefs or TRACEFS) if pids else None
    if counter is not None:
        counter.start()
    cpu0 = [process_cpu(pid) for pid in pids]
    ticks0 = [ticks(pid) for pid in pids]
    switches0 = [switches(pid) for pid in pids]
    nic0, ip0 = nic_counts(args), ip_packets()
    t0, before = cpu_stat()
    if args.hold is not None:
        args.hold.write_text("started\n")
    else:
        protocol.ready()
    while not sig.stop and not all_exited(pids):
        sig.wait(None)  # asleep: the window holds no work of the meter's
    if sig.stop:
        nic_done(args, nic0, sig, pids)
        if pids and args.expect_rx > 0:  # else the host waited out the batching delays
            drain(pids, args.drain_s, sig)
        end_sniffers(pids, sig)
    # Still unreaped: each zombie's /proc/<pid> holds its final times and switches.
    cpu = sum((process_cpu(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)), 0.0)
    ticks1, switches1 = [ticks(pid) for pid in pids], [switches(pid) for pid in pids]
    user, system = (sum(b[i] - a[i] for a, b in zip(ticks0, ticks1, strict=True)) for i in (0, 1))
    vol, invol = (
        sum(b[i] - a[i] for a, b in zip(switches0, switches1, strict=True)) for i in (0, 1)
    )
    t1, after = cpu_stat()
    nic1, ip1 = nic_counts(args), ip_packets()
    extra: dict[str, str] = {}
    syscalls = None
    if counter is not None:
        syscalls = counter.stop()  # a zombie makes no calls: read after its exit is the same
        if counter.error:
            extra["syscalls_error"] = counter.error
    outputs = [
        SnifferOutput(
            reap(c.pid), c.out.read_text(errors="replace") if c.out.exists() else "", tail(c.err)
        )
        for c in copies
    ]
    report = MeterReport(
        copies=outputs,
        sniffer_cpu_s=cpu,
        elapsed_s=t1 - t0,
        stat_before=before,
        stat_after=after,
        rx_packets=None if nic0 is None or nic1 is None else nic1[0] - nic0[0],
        rx_missed=None if nic0 is None or nic1 is None else nic1[1] - nic0[1],
        ip_packets=None if ip0 is None or ip1 is None else ip1 - ip0,
        voluntary_switches=vol,
        involuntary_switches=invol,
        syscalls=syscalls,
        extra=extra,
        sniffer_user_ticks=user,
        sniffer_system_ticks=system,
    )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
