"""The bench's guest-side meter, on the host: syscall counting by hist trigger, and a window.

No kernel tracing is touched: the tracefs the meter writes to is a directory
made here, its ``hist`` file filled with text as a 6.1 kernel prints it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from lab.guestside import meter
from lab.guestside.protocol import READY_ENV, Meter
from lab.guestside.reports import MeterReport

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
    counter = meter.SyscallCounter(1234, tmp_path)
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


def test_no_tracefs_is_no_count_not_a_failure(tmp_path: Path) -> None:
    counter = meter.SyscallCounter(1234, tmp_path / "absent")
    counter.start()
    assert counter.stop() is None
    assert counter.error is not None and "no syscall count" in counter.error
    assert not (tmp_path / "absent").exists()  # nothing mounted, nothing made


def test_options_in_any_order() -> None:
    args = Meter.from_argv(["--wait-line", "listening on", "--hold", "S", "--", "x", "-y"])
    assert (args.hold, args.wait_line) == (Path("S"), "listening on")
    assert args.cmd == ("x", "-y")
    assert Meter.from_argv([]) == Meter()
    assert Meter.from_argv(args.to_argv()) == args


@pytest.fixture
def fake_tracefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    event = tmp_path / "tracefs" / meter.SYS_ENTER
    event.mkdir(parents=True)
    (event / "trigger").write_text("")
    (event / "hist").write_text(HIST_EMPTY)
    monkeypatch.setattr(meter, "TRACEFS", tmp_path / "tracefs")
    return event


def test_held_window_starts_on_sigusr1_and_ends_at_the_sniffer_exit(
    tmp_path: Path,
    fake_tracefs: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready, started = tmp_path / "ready", tmp_path / "started"
    monkeypatch.setenv(READY_ENV, str(ready))
    # Ready at once (the protocol: the meter gave it a ready file of its own); 0.4 s of
    # CPU, mostly in its own code, once the window is open (SIGUSR1 at 0.2 s).
    code = (
        f"import os, pathlib, time; pathlib.Path(os.environ[{READY_ENV!r}]).touch()\n"
        "time.sleep(0.5)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.4: sum(range(20000))\n"
        "time.sleep(0.2)"
    )
    go = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        go.start()
        request = Meter(hold=started, cmd=(sys.executable, "-S", "-c", code))
        assert meter.main(request.to_argv()) == 0
    finally:
        go.cancel()
        for s, handler in saved.items():
            signal.signal(s, handler)
    report = MeterReport.from_json(capsys.readouterr().out)
    assert ready.exists() and started.exists()
    assert Path(f"{ready}.sniffer").exists()  # the sniffer's, apart from the meter's own
    assert 0.3 < report.elapsed_s < 5  # from the signal to the exit, not from the start
    assert report.exit == 0 and report.syscalls == 0  # the fake histogram's count
    assert report.voluntary_switches >= 1  # it slept
    # Ticks are sampled (100 a second): about 40 in its own code, few in the kernel.
    assert report.sniffer_user_ticks >= 20, report
    assert report.sniffer_system_ticks < report.sniffer_user_ticks, report
    trigger = (fake_tracefs / "trigger").read_text().splitlines()
    assert len(trigger) == 2 and trigger[1] == "!" + trigger[0]
