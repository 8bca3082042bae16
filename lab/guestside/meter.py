"""Runs inside a guest: measure one sniffer's CPU cost while the host injects.

Starts the sniffer, waits until it is ready (a file it creates, or a line on
its stderr such as tcpdump's "listening on"), then writes our own ready file.
The sniffer's CPU time is counted from that moment to its exit, read from
/proc/<pid>/schedstat (at exit, before the zombie is reaped), so interpreter
start-up, slow under TCG, is not charged to it. On SIGTERM the sniffer gets
SIGINT, so it reports and exits as tcpdump does. Prints one JSON object:
the sniffer's CPU seconds, the guest's /proc/stat deltas over the window,
and the sniffer's stdout and stderr. Without a command it measures the
window alone: the no-sniffer baseline.

    python -m lab.guestside.meter READY_FILE [--wait-file F | --wait-line TEXT] [-- CMD...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from lab.guestside.reports import MeterReport, dumps

USER_HZ = os.sysconf("SC_CLK_TCK")
COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


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
        # The comm field may hold spaces, so the fields are split after it.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:13]) / USER_HZ


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of ``pid`` so far: a voluntary one is a
    sleep, so each wakeup of a reader that blocks in poll() is one."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            got[key] = int(value)
    return got["voluntary_ctxt_switches"], got["nonvoluntary_ctxt_switches"]


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped so its stat stays readable."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def collect(stream: IO[str], into: list[str], marker: str | None, seen: threading.Event) -> None:
    for line in stream:
        into.append(line)
        if marker and marker in line:
            seen.set()


def main(argv: list[str]) -> int:
    ready, rest = Path(argv[0]), argv[1:]
    wait_file: Path | None = None
    wait_line: str | None = None
    if rest[:1] == ["--wait-file"]:
        wait_file, rest = Path(rest[1]), rest[2:]
    elif rest[:1] == ["--wait-line"]:
        wait_line, rest = rest[1], rest[2:]
    cmd = rest[1:] if rest[:1] == ["--"] else rest
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    proc = None
    out: list[str] = []
    err: list[str] = []
    if cmd:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = threading.Event()
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=collect, args=(proc.stdout, out, None, seen)),
            threading.Thread(target=collect, args=(proc.stderr, err, wait_line, seen)),
        ]
        for t in readers:
            t.start()
        while not exited(proc.pid) and not stop.is_set():
            if (wait_file and wait_file.exists()) or seen.is_set() or not (wait_file or wait_line):
                break
            time.sleep(0.02)
    cpu_at_ready = process_cpu(proc.pid) if proc is not None else 0.0
    switches_at_ready = switches(proc.pid) if proc is not None else (0, 0)
    before = cpu_times()
    start = time.monotonic()
    ready.write_text("ready\n")
    while not stop.wait(0.05):
        if proc is not None and exited(proc.pid):
            break
    rc, cpu, vol, invol = None, 0.0, 0, 0
    if proc is not None:
        if not exited(proc.pid):
            proc.send_signal(signal.SIGINT)
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        # Still unreaped: the zombie's /proc/<pid> holds its final times and switches.
        cpu = process_cpu(proc.pid) - cpu_at_ready
        now = switches(proc.pid)
        vol, invol = now[0] - switches_at_ready[0], now[1] - switches_at_ready[1]
        rc = proc.wait()
        for t in readers:
            t.join(timeout=10)
    after = cpu_times()
    report = MeterReport(
        exit=rc,
        sniffer_cpu_s=cpu,
        elapsed_s=time.monotonic() - start,
        cpu_s={k: round(after[k] - before[k], 3) for k in COLUMNS},
        stdout="".join(out),
        stderr="".join(err)[-4000:],
        voluntary_switches=vol,
        involuntary_switches=invol,
    )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
