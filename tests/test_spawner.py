"""The guest's spawner, run against a local shell: warm children, exit statuses, signals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import LabError
from lab.console import Console
from lab.labenv import LabEnv
from lab.spawn import GuestProc, Spawner


@pytest.fixture
def spawner(console: Console, tmp_path: Path) -> Iterator[Spawner]:
    sp = Spawner(console, LabEnv.guest_python(), tmp_path / "state")
    yield sp
    sp.close()


def spawn(sp: Spawner, tmp_path: Path, name: str, module: str, *args: object) -> GuestProc:
    return sp.spawn(name, module, *args, out=tmp_path / f"{name}.out", log=tmp_path / f"{name}.log")


def test_child_output_and_exit_status(spawner: Spawner, tmp_path: Path) -> None:
    ok = spawn(spawner, tmp_path, "help", "pysniff", "--help")
    assert ok.wait(60) == 0
    assert ok.out.read_text().startswith("usage: pysniff")
    bad = spawn(spawner, tmp_path, "bad", "pysniff", "--no-such-flag")
    assert bad.wait(60) == 2
    assert "unrecognized arguments: --no-such-flag" in bad.log.read_text()
    assert bad.pid != ok.pid


def test_signals_reach_the_child_and_show_in_its_status(
    spawner: Spawner, console: Console, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    echo = spawn(spawner, tmp_path, "echo", "lab.guestside.udpecho", "127.0.0.1", 0, 1, ready)
    while not ready.exists():
        assert echo.poll() is None, echo.log.read_text()
    console.run(f"kill -KILL {echo.pid}")
    assert echo.wait(30) == 128 + 9


def test_a_child_still_running_is_an_error_at_timeout(
    spawner: Spawner, console: Console, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    echo = spawn(spawner, tmp_path, "echo", "lab.guestside.udpecho", "127.0.0.1", 0, 1, ready)
    with pytest.raises(LabError, match="still running after 0s"):
        echo.wait(0.2)
    console.run(f"kill {echo.pid}")
    assert echo.wait(30) == 128 + 15


def test_result_is_the_report_of_a_clean_exit_else_an_error_with_the_log(
    spawner: Spawner, tmp_path: Path
) -> None:
    stats = spawn(spawner, tmp_path, "stats", "pysniff", "--stats", "--json", "--device", "/nope")
    with pytest.raises(LabError, match=r"stats exited 1: .*/nope"):
        stats.result(60)
    report = tmp_path / "report.json"
    report.write_text('{"frames": 3}')
    ok = spawn(spawner, tmp_path, "help", "pysniff", "--help")
    assert ok.result(60, report) == {"frames": 3}
