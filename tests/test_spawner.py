"""The guest's spawner, run against a local shell: warm children, exit statuses, signals, stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import LabError
from lab.console import Console
from lab.labenv import guest_python
from lab.spawn import GuestProc, Spawner
from lab.wait import WaitTimeout


@pytest.fixture
def spawner(console: Console, tmp_path: Path) -> Iterator[Spawner]:
    yield Spawner(console, guest_python(), tmp_path / "state")


def spawn(sp: Spawner, tmp_path: Path, name: str, module: str, *args: object) -> GuestProc:
    return sp.spawn(name, module, *args, out=tmp_path / f"{name}.out", log=tmp_path / f"{name}.log")


def echo_server(sp: Spawner, tmp_path: Path) -> GuestProc:
    ready = tmp_path / "ready"
    echo = spawn(sp, tmp_path, "echo", "lab.guestside.udpecho", "127.0.0.1", 0, 1, ready)
    echo.wait_file(ready, 60)
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
    bad = spawn(spawner, tmp_path, "bad", "pysniff", "--no-such-flag")
    with pytest.raises(LabError, match=r"(?s)bad to be ready \(never\): exited 2: .*no-such-flag"):
        bad.wait_file(tmp_path / "never", 60)


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
