"""The bench's guest-side meter, on the host: syscall counting by hist trigger, and a window.

No kernel tracing is touched: the tracefs the meter writes to is a directory
made here, its ``hist`` file filled with text as a 6.1 kernel prints it. The
meter blocks signals in its process, so it runs as a process of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab import paths
from lab.bench.loads import FrameLoad
from lab.bench.trial import end_window
from lab.console import Console
from lab.guestside import meter, protocol
from lab.guestside.protocol import READY_ENV
from lab.guestside.reports import MeterReport, SnifferOutput
from lab.spawn import Spawner
from lab.testbed import guest_python
from lab.wait import wait_until

INFO = "hist:keys=common_pid:vals=hitcount:sort=hitcount:size=2048 if common_pid == 1234"

HIST_PLAIN = (
    "# event histogram\n#\n# trigger info: "
    + INFO
    + " [active]\n#\n"
    + """

{ common_pid:       1234 } hitcount:        567

Totals:
    Hits: 567
    Entries: 1
    Dropped: 0
"""
)

HIST_EXECNAME = """\
# event histogram
#
# trigger info: hist:keys=common_pid.execname:vals=hitcount:sort=hitcount:size=2048 [active]
#

{ common_pid: python3         [      1234] } hitcount:         40
{ common_pid: ntadump         [        77] } hitcount:          3

Totals:
    Hits: 43
    Entries: 2
    Dropped: 0
"""

HIST_EMPTY = (
    "# event histogram\n#\n# trigger info: "
    + INFO
    + " [active]\n#\n"
    + """


Totals:
    Hits: 0
    Entries: 0
    Dropped: 0
"""
)


def test_hist_count_of_the_pid() -> None:
    assert meter.parse_hist(HIST_PLAIN, 1234) == 567
    assert meter.parse_hist(HIST_EXECNAME, 1234) == 40
    assert meter.parse_hist(HIST_EXECNAME, 77) == 3


def test_a_pid_without_calls_counts_zero_only_in_a_complete_histogram() -> None:
    assert meter.parse_hist(HIST_EMPTY, 1234) == 0
    assert meter.parse_hist(HIST_PLAIN, 999) == 0  # filtered: another pid made none
    dropped = HIST_EMPTY.replace("Dropped: 0", "Dropped: 5")
    assert meter.parse_hist(dropped, 1234) is None
    assert meter.parse_hist("# event histogram\n#\n", 1234) is None  # no trigger: no totals
    assert meter.parse_hist("", 1234) is None


def test_trigger_text_and_its_removal(tmp_path: Path) -> None:
    event = tmp_path / meter.SYS_ENTER
    event.mkdir(parents=True)
    (event / "trigger").write_text("# Available triggers:\n")
    (event / "hist").write_text(HIST_PLAIN)
    counter = meter.SyscallCounter((1234,), tmp_path)
    counter.start()
    assert counter.error is None
    assert counter.stop() == 567
    lines = (event / "trigger").read_text().splitlines()
    # Appended, not truncated (O_TRUNC would drop every trigger the event has).
    assert lines == [
        "# Available triggers:",
        "hist:keys=common_pid:vals=hitcount if common_pid == 1234",
        "!hist:keys=common_pid:vals=hitcount if common_pid == 1234",
    ]


def test_copies_are_counted_by_one_trigger_and_summed(tmp_path: Path) -> None:
    """Copies of a sniffer: one trigger for all their pids (a histogram, an entry each),
    their counts summed; a pid without an entry made none, if nothing was dropped."""
    event = tmp_path / meter.SYS_ENTER
    event.mkdir(parents=True)
    (event / "trigger").write_text("")
    (event / "hist").write_text(HIST_EXECNAME)
    counter = meter.SyscallCounter((1234, 77, 555), tmp_path)
    counter.start()
    assert counter.stop() == 43
    either = "hist:keys=common_pid:vals=hitcount if common_pid == 1234 || common_pid == 77"
    assert (event / "trigger").read_text().splitlines() == [
        f"{either} || common_pid == 555",
        f"!{either} || common_pid == 555",
    ]
    (event / "hist").write_text(HIST_EXECNAME.replace("Dropped: 0", "Dropped: 1"))
    counter = meter.SyscallCounter((1234, 555), tmp_path)
    counter.start()
    assert counter.stop() is None  # 555's entry may be the one dropped
    assert counter.error == "no syscall count: the hist file has no complete histogram"


def test_no_tracefs_is_no_count_not_a_failure(tmp_path: Path) -> None:
    counter = meter.SyscallCounter((1234,), tmp_path / "absent")
    counter.start()
    assert counter.stop() is None
    assert counter.error is not None and "no syscall count" in counter.error
    assert not (tmp_path / "absent").exists()  # nothing mounted, nothing made


def test_options_in_any_order() -> None:
    args = protocol.Meter.from_argv(
        ["--wait-line", "listening on", "--expect-rx", "5", "--hold", "S", "--", "x", "-y"]
    )
    assert (args.hold, args.wait_line, args.expect_rx) == (Path("S"), "listening on", 5)
    assert args.cmd == ("x", "-y")
    assert protocol.Meter.from_argv([]) == protocol.Meter()
    assert protocol.Meter.from_argv(args.to_argv()) == args
    forked = protocol.Meter(iface="eth1", module="pysniff.cli", cmd=("-i", "eth1", "--json"))
    assert protocol.Meter.from_argv(forked.to_argv()) == forked  # its arguments, options too
    copies = protocol.Meter(copies=2, cmd=("ntadump", "-i", "eth1"))
    assert copies.to_argv()[-6:] == ["--copies", "2", "--", "ntadump", "-i", "eth1"]
    assert protocol.Meter.from_argv(copies.to_argv()) == copies


def test_bad_options_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        protocol.Meter.from_argv(["--expect-rx", "many"])
    assert exit.value.code == 2
    assert "--expect-rx: invalid int value: 'many'" in capsys.readouterr().err


@pytest.fixture
def fake_tracefs(tmp_path: Path) -> Path:
    root = tmp_path / "tracefs"
    event = root / meter.SYS_ENTER
    event.mkdir(parents=True)
    (event / "trigger").write_text("")
    (event / "hist").write_text(HIST_EMPTY)
    return root


class Meter:
    """The meter in a process of its own, as the spawner runs it in a guest: its own ready
    file in $NTALAB_READY, and ``request`` (held, tracefs a directory of the test's)."""

    def __init__(
        self, tmp: Path, tracefs: Path, request: protocol.Meter, prelude: str = ""
    ) -> None:
        self.ready, self.started = tmp / "ready", tmp / "started"
        args = replace(request, hold=self.started, tracefs=tracefs).to_argv()
        # ``prelude`` runs first in the meter's interpreter (a test's changed timing).
        code = (
            f"{prelude}\nimport sys\nfrom lab.guestside import meter\n"
            f"sys.exit(meter.main({args!r}))"
        )
        env = {**os.environ, "PYTHONPATH": str(paths.IMPORT_ROOT), READY_ENV: str(self.ready)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip

    def wait_for(self, path: Path, timeout: float = 20) -> None:
        wait_until(path.exists, timeout, f"the meter to write {path.name}", failed=self._ended)

    def _ended(self) -> str | None:
        return None if self.proc.poll() is None else f"exited {self.proc.returncode}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def report(self, timeout: float = 20) -> MeterReport:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return MeterReport.from_json(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def meters(tmp_path: Path, fake_tracefs: Path) -> Iterator[list[Meter]]:
    started: list[Meter] = []
    yield started
    for m in started:
        m.kill()


def test_held_window_starts_on_sigusr1_and_ends_at_the_sniffer_exit(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    # Ready at once, through the protocol (it prints the ready file the meter gave it);
    # 0.4 s of CPU, mostly in its own code, once the window is open.
    code = (
        f"import os, pathlib, time; told = os.environ[{READY_ENV!r}]\n"
        "pathlib.Path(told).touch(); time.sleep(0.5)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.4: sum(range(20000))\n"
        "print(told); time.sleep(0.2)"
    )
    m = Meter(tmp_path, fake_tracefs, protocol.Meter(cmd=(sys.executable, "-S", "-c", code)))
    meters.append(m)
    m.wait_for(m.ready)
    time.sleep(0.2)
    assert not m.started.exists()  # held until told
    m.signal(signal.SIGUSR1)
    report = m.report()
    assert m.started.exists()
    # The sniffer's ready file is its own, in the meter's scratch directory: the host
    # only ever sees the meter's.
    (copy,) = report.copies
    told = Path(copy.stdout.strip())
    assert told != m.ready and told.parent.name.startswith("ntalab-meter-"), told
    assert 0.3 < report.elapsed_s < 5  # from the signal to the exit, not from the start
    assert copy.exit == 0 and report.syscalls == 0  # the fake histogram's count
    assert 0.35 < report.sniffer_cpu_s < 2, report
    assert report.voluntary_switches >= 1  # it slept
    # Ticks are sampled (100 a second): about 40 in its own code, few in the kernel.
    assert report.sniffer_user_ticks >= 20, report
    assert report.sniffer_system_ticks < report.sniffer_user_ticks, report
    # The whole host's CPU over the window: at least the sniffer's own.
    busy = (
        report.elapsed_s * report.stat_after.cpus
        - (
            (report.stat_after.idle + report.stat_after.iowait)
            - (report.stat_before.idle + report.stat_before.iowait)
        )
        / report.stat_after.hz
    )
    assert busy > 0.3, report
    trigger = (fake_tracefs / meter.SYS_ENTER / "trigger").read_text().splitlines()
    assert len(trigger) == 2 and trigger[1] == "!" + trigger[0]


# threading.Event.wait() as it is at its worst: holding its Condition's lock
# while it waits. A signal that comes then, handled by a Python handler that
# calls Event.set(), deadlocks (set() takes the lock the waiter holds): the
# old meter's ready file was written and its window never opened ("to be
# ready: not within 60s" while the ready file existed).
LOCKED_EVENT = """
import threading, time
def wait(self, timeout=None):
    with self._cond:
        time.sleep(0.05 if timeout is None else min(timeout, 0.05))
        return self._flag
threading.Event.wait = wait
"""


def test_a_signal_at_any_moment_opens_and_closes_the_window(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    m = Meter(tmp_path, fake_tracefs, protocol.Meter(), prelude=LOCKED_EVENT)
    meters.append(m)
    m.wait_for(m.ready)
    m.signal(signal.SIGUSR1)
    m.wait_for(m.started, 10)
    m.signal(signal.SIGTERM)
    report = m.report(10)
    assert report.copies == [] and report.sniffer_cpu_s == 0


def test_a_go_sent_before_the_meter_waits_is_not_lost(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    # The sniffer is ready only after a second: the host's SIGUSR1 comes first.
    code = (
        f"import os, pathlib, time; time.sleep(1); pathlib.Path(os.environ[{READY_ENV!r}]).touch()"
    )
    m = Meter(tmp_path, fake_tracefs, protocol.Meter(cmd=(sys.executable, "-S", "-c", code)))
    meters.append(m)
    time.sleep(0.3)
    assert not m.ready.exists()  # not before its sniffer is
    m.signal(signal.SIGUSR1)
    report = m.report()
    assert m.ready.exists() and m.started.exists() and report.copies[0].exit == 0


@pytest.fixture
def fake_net(tmp_path: Path) -> Path:
    """A /sys/class/net of the test's: eth1's counters, at 0, set with ``counts``."""
    root = tmp_path / "net"
    (root / "eth1" / "statistics").mkdir(parents=True)
    counts(root, 0, 0)
    return root


def counts(net: Path, rx: int, missed: int) -> None:
    """eth1's counters now, each file replaced whole (the meter never reads half of one)."""
    stats = net / "eth1" / "statistics"
    protocol.write_whole(str(stats / "rx_packets"), f"{rx}\n")
    protocol.write_whole(str(stats / "rx_missed_errors"), f"{missed}\n")


# A sniffer that missed frames: ready at once, then waits for ever for the rest; SIGINT
# makes it report and exit 0 (as ntadump and tcpdump do). After SELF_EXIT_S (if set) it
# ends on its own instead, as a reader does once it took its count.
WAITING = (
    "import os, pathlib, signal, sys, time\n"
    "def stopped(*_): print('stopped'); sys.exit(0)\n"
    "signal.signal(signal.SIGINT, stopped)\n"
    f"pathlib.Path(os.environ[{READY_ENV!r}]).touch()\n"
    "if len(sys.argv) > 1: time.sleep(float(sys.argv[1])); print('took its count')\n"
    "else: signal.pause()\n"
)


def waiting(tmp: Path, *args: str) -> tuple[str, ...]:
    """The command running WAITING (a file: a spawner's request is one line)."""
    script = tmp / "waiting.py"
    script.write_text(WAITING)
    return (sys.executable, "-S", str(script), *args)


def window_of(meters: list[Meter], tmp_path: Path, tracefs: Path, request: protocol.Meter,
              prelude: str = "") -> Meter:  # fmt: skip
    """The meter started, its sniffer ready, the window open."""
    m = Meter(tmp_path, tracefs, request, prelude)
    meters.append(m)
    m.wait_for(m.ready)
    m.signal(signal.SIGUSR1)
    m.wait_for(m.started)
    return m


def test_stop_waits_for_the_frames_the_nic_must_take(
    tmp_path: Path, fake_tracefs: Path, fake_net: Path, meters: list[Meter]
) -> None:
    """SIGTERM ends the window only once ``--iface`` has taken ``--expect-rx`` frames."""
    request = protocol.Meter(iface="eth1", expect_rx=2000, net=fake_net)
    m = window_of(meters, tmp_path, fake_tracefs, request)
    counts(fake_net, 1999, 0)
    m.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert m.proc.poll() is None  # still waiting for the last frame
    counts(fake_net, 2000, 0)
    report = m.report()
    assert (report.rx_packets, report.rx_missed, report.copies) == (2000, 0, [])
    assert report.elapsed_s >= 1.0


@pytest.mark.parametrize("copies", [1, 2])
def test_the_window_ends_when_the_nic_is_done_not_when_the_reader_gives_up(
    copies: int, tmp_path: Path, fake_tracefs: Path, fake_net: Path, meters: list[Meter]
) -> None:
    """A reader that missed frames waits for them for ever: once the NIC took the load
    (here 990 received, 10 missed for want of a buffer) and stood still, it is stopped and
    the window ends, within a second or so, not at its idle timeout. Copies of it: every
    one is stopped, and says so."""
    request = protocol.Meter(
        iface="eth1", expect_rx=1000, net=fake_net, cmd=waiting(tmp_path), copies=copies
    )
    m = window_of(meters, tmp_path, fake_tracefs, request)
    counts(fake_net, 990, 10)
    m.signal(signal.SIGTERM)
    report = m.report(10)
    # Each reported, as stopped.
    assert report.copies == [SnifferOutput(0, "stopped\n", "")] * copies
    assert (report.rx_packets, report.rx_missed) == (990, 10)
    assert report.elapsed_s < 5.0, report.elapsed_s  # the reader's idle timeout is 20 s


def test_counters_still_moving_hold_the_window_open(
    tmp_path: Path, fake_tracefs: Path, fake_net: Path, meters: list[Meter]
) -> None:
    """At the count, but still moving (more frames than the load's: the last of them, or
    others): the window ends once they stand still, with every frame in it. (Standing still
    is 0.5 s here, not 50 ms: this test's writes every 10 ms may stall on a busy host.)"""
    request = protocol.Meter(iface="eth1", expect_rx=100, net=fake_net)
    still = "from lab.guestside import meter as m; m.STILL_S = 0.5"
    m = window_of(meters, tmp_path, fake_tracefs, request, still)
    counts(fake_net, 100, 0)
    m.signal(signal.SIGTERM)
    start = time.monotonic()
    rx = 100
    while time.monotonic() - start < 1.0:
        rx += 1
        counts(fake_net, rx, 0)
        time.sleep(0.01)
    report = m.report()
    assert report.rx_packets == rx
    assert report.elapsed_s >= 1.0, report.elapsed_s


@pytest.mark.parametrize(
    ("expect_rx", "drain_s", "said"),
    [(10, 0.0, "stopped\n"), (10, 5.0, "took its count\n"), (0, 5.0, "stopped\n")],
)
def test_a_sniffer_gets_its_drain_time_to_end_on_its_own(
    expect_rx: int, drain_s: float, said: str, tmp_path: Path, fake_tracefs: Path,
    fake_net: Path, meters: list[Meter],
) -> None:  # fmt: skip
    """Once the NIC is done, a sniffer still batching (tcpdump's open block) has
    ``--drain-s`` to take its last frames and end on its own; without, it is stopped. A
    load with no count (web, bulk) gets none: the host waited after it, for every sniffer."""
    cmd = waiting(tmp_path, "1.5")
    request = protocol.Meter(
        iface="eth1", expect_rx=expect_rx, drain_s=drain_s, net=fake_net, cmd=cmd
    )
    m = window_of(meters, tmp_path, fake_tracefs, request)
    counts(fake_net, 10, 0)
    m.signal(signal.SIGTERM)
    report = m.report()
    assert report.copies == [SnifferOutput(0, said, "")]


def test_a_module_sniffer_runs_forked_and_reports(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    # Ready through the protocol: the forked child is told its ready file as the spawner's are.
    listen = protocol.TcpListen("127.0.0.1", 0)
    request = protocol.Meter(module=listen.MODULE, cmd=tuple(listen.to_argv()))
    m = Meter(tmp_path, fake_tracefs, request)
    meters.append(m)
    m.wait_for(m.ready)
    m.signal(signal.SIGUSR1)
    m.wait_for(m.started)
    m.signal(signal.SIGTERM)  # the meter gives it SIGINT, as it gives every sniffer
    report = m.report()
    # The module ran in the forked child (there is no program of that name to execute),
    # listening until the meter's SIGINT ended it (tcplisten keeps SIGINT's default).
    assert report.copies == [SnifferOutput(-signal.SIGINT, "", "")], report


def test_under_the_spawner_the_host_sees_the_meters_ready_file_only(
    console: Console, tmp_path: Path, fake_tracefs: Path
) -> None:
    """As a bench trial runs it: the spawner gives the meter a ready file, the meter forks a
    Python sniffer warm and gives it one of its own; the host waits for the meter's."""
    listen = protocol.TcpListen("127.0.0.1", 0)
    started = tmp_path / "started"
    request = protocol.Meter(
        hold=started, tracefs=fake_tracefs, module=listen.MODULE, cmd=tuple(listen.to_argv())
    )
    spawner = Spawner(console, guest_python(), tmp_path / "state")
    out, log = tmp_path / "meter.json", tmp_path / "meter.log"
    try:
        with spawner.spawn("meter", request.MODULE, request.to_argv(), out, log, True) as m:
            m.wait_ready(60)
            assert m.ready_file is not None and m.ready_file.read_text() == f"{m.pid}\n"
            assert not started.exists()  # held until told
            m.signal("USR1")
            m.wait_file(started, 30)
            m.signal("TERM")
            report = m.result(MeterReport.from_json, 60)
    finally:
        spawner.stop()
    assert report.copies == [SnifferOutput(-signal.SIGINT, "", "")], report


def test_a_trial_whose_reader_missed_frames_ends_with_the_nic(
    console: Console, tmp_path: Path, fake_tracefs: Path, fake_net: Path
) -> None:
    """The host's side of a trial's end (``trial.end_window``) with the meter under the
    spawner, as a flat-out trial whose reader missed frames: the window ends once the NIC
    took the load, not when the host gives up on the reader."""
    started = tmp_path / "started"
    request = protocol.Meter(
        hold=started, iface="eth1", expect_rx=1000, tracefs=fake_tracefs, net=fake_net,
        cmd=waiting(tmp_path),
    )  # fmt: skip
    spawner = Spawner(console, guest_python(), tmp_path / "state")
    out, log = tmp_path / "meter.json", tmp_path / "meter.log"
    try:
        with spawner.spawn("meter", request.MODULE, request.to_argv(), out, log, True) as m:
            m.wait_ready(60)
            m.signal("USR1")
            m.wait_file(started, 30)
            counts(fake_net, 998, 2)  # the load, as the NIC took it
            report = end_window(m, FrameLoad("max", 1000, None))
    finally:
        spawner.stop()
    assert (report.copies, report.rx_packets) == ([SnifferOutput(0, "stopped\n", "")], 998)
    assert report.elapsed_s < 5.0, report.elapsed_s  # the host waited 20 s for a reader


def test_a_sniffer_that_dies_before_it_is_ready_is_named(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    dies = "import sys; sys.exit('no such device: eth9')"
    request = protocol.Meter(wait_line="listening on", cmd=(sys.executable, "-c", dies))
    m = Meter(tmp_path, fake_tracefs, request)
    meters.append(m)
    m.proc.wait(20)
    err = m.proc.stderr.read() if m.proc.stderr else ""
    assert m.proc.returncode == 1 and not m.ready.exists()
    assert "the sniffer exited before it was ready (status 1): no such device: eth9" in err


# A copy of a sniffer that goes step by step as the test opens gates: each copy is told
# apart by the name of the ready file the meter gave it (ready-0, ready-1: the order
# started). Gate go-<name>: it is ready; gate window: 0.3 s of CPU; gate end-<name>: it
# exits. It leaves <name>.is-ready and <name>.ending where the test sees them.
STEPPED = (
    "import os, pathlib, sys, time\n"
    f"me = pathlib.Path(os.environ[{READY_ENV!r}]); gates = pathlib.Path(sys.argv[1])\n"
    "def gate(name):\n"
    "    while not (gates / name).exists(): time.sleep(0.02)\n"
    "gate(f'go-{me.name}'); me.touch(); (gates / f'{me.name}.is-ready').touch()\n"
    "gate('window'); t = time.process_time()\n"
    "while time.process_time() - t < 0.3: sum(range(20000))\n"
    "(gates / f'{me.name}.ending').touch(); gate(f'end-{me.name}')\n"
    "print(me.name, os.getpid())\n"
)


def two_copies(
    tmp_path: Path, tracefs: Path, meters: list[Meter], source: str
) -> tuple[Meter, Path]:
    """A meter around two copies of the Python sniffer ``source``, each given the gates
    directory the test steps it through; the meter, and that directory."""
    gates, script = tmp_path / "gates", tmp_path / "sniffer.py"
    gates.mkdir()
    script.write_text(source)
    request = protocol.Meter(cmd=(sys.executable, "-S", str(script), str(gates)), copies=2)
    m = Meter(tmp_path, tracefs, request)
    meters.append(m)
    return m, gates


def test_every_copy_is_ready_before_the_meter_and_the_window_waits_for_every_one(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    """Two copies of a sniffer (two readers of one device): the meter is ready once both
    are, the window ends once both exited, and their CPU times are summed."""
    m, gates = two_copies(tmp_path, fake_tracefs, meters, STEPPED)
    (gates / "go-ready-0").touch()
    m.wait_for(gates / "ready-0.is-ready")
    time.sleep(0.5)  # the meter looks every 20 ms
    assert not m.ready.exists()  # the second copy is not ready yet
    (gates / "go-ready-1").touch()
    m.wait_for(m.ready)
    m.signal(signal.SIGUSR1)
    m.wait_for(m.started)
    (gates / "window").touch()
    m.wait_for(gates / "ready-0.ending")
    m.wait_for(gates / "ready-1.ending")
    (gates / "end-ready-0").touch()
    time.sleep(0.5)
    assert m.proc.poll() is None  # the first copy exited; the second still runs
    (gates / "end-ready-1").touch()
    report = m.report()
    names = [c.stdout.split()[0] for c in report.copies]
    pids = tuple(int(c.stdout.split()[1]) for c in report.copies)
    assert names == ["ready-0", "ready-1"]  # in the order started, each its own ready file
    assert [(c.exit, c.stderr) for c in report.copies] == [(0, ""), (0, "")]
    assert report.elapsed_s >= 0.5
    # 0.3 s of CPU each, summed (and ticks: about 30 each, in their own code).
    assert 0.55 < report.sniffer_cpu_s < 3, report
    assert report.sniffer_user_ticks >= 40, report
    assert report.voluntary_switches >= 2  # each slept at its gate
    trigger = (fake_tracefs / meter.SYS_ENTER / "trigger").read_text().splitlines()
    assert trigger == [meter.hist_trigger(pids), "!" + meter.hist_trigger(pids)]
    assert report.syscalls == 0  # the fake histogram: complete, neither pid in it


# A copy that dies before it is ready (ready-1), once the other (ready-0) is ready and has
# left its pid in the gates directory.
DIES = (
    "import os, pathlib, signal, sys, time\n"
    f"me = pathlib.Path(os.environ[{READY_ENV!r}]); gates = pathlib.Path(sys.argv[1])\n"
    "if me.name == 'ready-1':\n"
    "    while not (gates / 'pid').exists(): time.sleep(0.02)\n"
    "    sys.exit('no such device: eth9')\n"
    "(gates / 'pid.tmp').write_text(str(os.getpid())); (gates / 'pid.tmp').rename(gates / 'pid')\n"
    "me.touch(); signal.pause()\n"
)


def test_a_copy_that_dies_before_it_is_ready_is_named_and_the_others_ended(
    tmp_path: Path, fake_tracefs: Path, meters: list[Meter]
) -> None:
    m, gates = two_copies(tmp_path, fake_tracefs, meters, DIES)
    m.proc.wait(20)
    err = m.proc.stderr.read() if m.proc.stderr else ""
    assert m.proc.returncode == 1 and not m.ready.exists()
    assert (
        "meter: the sniffer (copy 2 of 2) exited before it was ready (status 1): "
        "no such device: eth9"
    ) in err
    with pytest.raises(ProcessLookupError):  # the ready copy was ended and reaped
        os.kill(int((gates / "pid").read_text()), 0)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--copies", "0", "--", "tcpdump"], "meter: --copies 0: needs 1 or more\n"),
        (["--copies", "2"], "meter: --copies 2: needs a sniffer to copy\n"),
    ],
)
def test_copies_need_a_sniffer_and_one_or_more(argv: list[str], said: str) -> None:
    # A process of its own: a meter that took these would wait for its signals for ever.
    env = {**os.environ, "PYTHONPATH": str(paths.IMPORT_ROOT)}
    done = subprocess.run([sys.executable, "-m", meter.__name__, *argv], env=env,
                          capture_output=True, text=True, timeout=20)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (2, "", said)
