"""The guest's spawner, run against a local shell: warm children, exit statuses, signals, stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import LabError
from lab.console import Console
from lab.guestside.protocol import UdpEcho
from lab.spawn import GuestProc, Spawner
from lab.testbed import guest_python
from lab.wait import WaitTimeout


@pytest.fixture
def spawner(console: Console, tmp_path: Path) -> Iterator[Spawner]:
    yield Spawner(console, guest_python(), tmp_path / "state")


def spawn(
    sp: Spawner, tmp_path: Path, name: str, module: str, *args: str, ready: bool = False
) -> GuestProc:
    out, log = tmp_path / f"{name}.out", tmp_path / f"{name}.log"
    return sp.spawn(name, module, args, out, log, ready)


def echo_server(sp: Spawner, tmp_path: Path) -> GuestProc:
    request = UdpEcho("127.0.0.1", 0, 1)
    echo = spawn(sp, tmp_path, "echo", request.MODULE, *request.to_argv(), ready=True)
    echo.wait_ready(60)
    return echo


def test_child_output_and_exit_status(spawner: Spawner, tmp_path: Path) -> None:
    ok = spawn(spawner, tmp_path, "help", "pysniff", "--help")
    assert ok.wait(60) == 0
    assert ok.out.read_text().startswith("usage: pysniff")
    bad = spawn(spawner, tmp_path, "bad", "pysniff", "--no-such-flag")
    assert bad.wait(60) == 2
    assert "unrecognized arguments: --no-such-flag" in bad.log.read_text()
    assert bad.pid != ok.pid


def test_signals_reach_the_child_and_show_in_its_status(spawner: Spawner, tmp_path: Path) -> None:
    echo = echo_server(spawner, tmp_path)
    echo.signal("KILL")
    assert echo.wait(30) == 128 + 9


def test_a_child_still_running_is_an_error_at_timeout(spawner: Spawner, tmp_path: Path) -> None:
    echo = echo_server(spawner, tmp_path)
    with pytest.raises(WaitTimeout, match=r"echo \(pid \d+\) to exit .*: not within 0s"):
        echo.wait(0.2)
    assert echo.stop() == 128 + 15


def test_leaving_the_with_stops_a_child_still_running(spawner: Spawner, tmp_path: Path) -> None:
    with echo_server(spawner, tmp_path) as echo:
        assert echo.poll() is None
    assert echo.poll() == 128 + 15
    assert echo.stop() == 128 + 15  # once ended, stop() only reports


def test_a_ready_file_that_never_comes_names_the_exit(spawner: Spawner, tmp_path: Path) -> None:
    bad = spawn(spawner, tmp_path, "bad", "pysniff", "--no-such-flag", ready=True)
    with pytest.raises(LabError, match=r"(?s)bad to be ready: exited 2: .*no-such-flag"):
        bad.wait_ready(60)


def test_a_program_says_it_is_ready_through_the_protocol(spawner: Spawner, tmp_path: Path) -> None:
    """The spawner names a ready file in the child's environment, and only in that child's:
    a program started without one cannot say, and a waiter is told so at once."""
    echo = echo_server(spawner, tmp_path)
    assert echo.ready_file is not None and echo.ready_file.read_text() == f"{echo.pid}\n"
    plain = spawn(spawner, tmp_path, "plain", "pysniff", "--help")
    with pytest.raises(LabError, match="without a ready file"):
        plain.wait_ready(1)


def test_result_is_the_parsed_report_of_a_clean_exit_else_an_error_with_the_log(
    spawner: Spawner, tmp_path: Path
) -> None:
    stats = spawn(spawner, tmp_path, "stats", "pysniff", "--stats", "--json", "--device", "/nope")
    with pytest.raises(LabError, match=r"stats exited 1: .*/nope"):
        stats.result(str, 60)
    report = tmp_path / "report.json"
    report.write_text("3\n")
    ok = spawn(spawner, tmp_path, "help", "pysniff", "--help")
    assert ok.result(int, 60, report) == 3
