"""The console protocol, driven against a real local bash on a pty (a fake guest)."""

from __future__ import annotations

import io
import time

import pytest

from lab.console import CommandFailed, Console, ConsoleTimeout, GuestPanicked


def test_stdout_stderr_and_status_kept_apart(console: Console) -> None:
    r = console.run("echo out; echo err >&2; exit_code() { return 3; }; exit_code", check=False)
    assert (r.stdout, r.stderr, r.rc) == ("out\n", "err\n", 3)


def test_failure_raises_with_output(console: Console) -> None:
    with pytest.raises(CommandFailed, match=r"failed \(1\): false") as e:
        console.run("false")
    assert e.value.result.rc == 1


def test_many_lines_and_marker_lookalikes(console: Console) -> None:
    r = console.run("seq 1 2000; echo '@@ntalab-out 0 0@@'")
    lines = r.stdout.splitlines()
    assert lines[:2000] == [str(i) for i in range(1, 2001)]
    assert lines[2000] == "@@ntalab-out 0 0@@"


def test_stdin_is_not_the_console(console: Console) -> None:
    assert console.run("cat; echo done").stdout == "done\n"


def test_commands_follow_each_other(console: Console) -> None:
    assert [console.run(f"echo {i}").stdout for i in range(20)] == [f"{i}\n" for i in range(20)]


def test_timeout_names_the_command_and_shows_the_tail(console: Console) -> None:
    with pytest.raises(ConsoleTimeout, match=r"within 1s to: echo started; sleep 30") as e:
        console.run("echo started; sleep 30", timeout=1)
    assert "started" in str(e.value)


def test_after_a_timeout_the_stuck_command_is_interrupted_and_the_next_one_runs(
    console: Console,
) -> None:
    """One hung program must not fail every command after it (the cascade CI met)."""
    with pytest.raises(ConsoleTimeout):
        console.run("sleep 600", timeout=1)
    assert console.run("echo next", timeout=10).stdout == "next\n"
    assert "^C (the command did not return)" in str(console.log.getvalue())  # type: ignore[attr-defined]


def test_a_command_deaf_to_ctrl_c_fails_every_later_one_at_once(console: Console) -> None:
    start = time.monotonic()
    with pytest.raises(ConsoleTimeout, match="within 1s"):
        console.run("trap '' INT; sleep 600", timeout=1)
    with pytest.raises(ConsoleTimeout, match=r"stopped answering at: trap '' INT; sleep 600"):
        console.run("echo after", timeout=60)
    assert time.monotonic() - start < 40


def test_a_panic_fails_this_command_at_once_and_every_later_one(console: Console) -> None:
    """A dead kernel answers nothing: the command that saw the panic and all after it fail
    with it, without waiting out their timeouts."""
    start = time.monotonic()
    with pytest.raises(GuestPanicked, match=r"panicked while running: echo oops") as e:
        console.run("echo oops; echo '---[ end Kernel panic - not syncing: Fatal exception ]---'; "
                    "sleep 30", timeout=20)  # fmt: skip
    assert "Fatal exception" in str(e.value)
    with pytest.raises(GuestPanicked):
        console.run("echo after", timeout=20)
    assert time.monotonic() - start < 10


def test_background_job_and_wait(console: Console) -> None:
    pid = console.bg("sleep 0.2; exit 7", "/dev/null")
    assert console.run(f"wait {pid}", check=False).rc == 7


def test_commands_are_logged(console: Console) -> None:
    console.run("echo logged-output")
    log = console.log
    assert isinstance(log, io.StringIO)
    assert "# ntalab> { echo logged-output" in log.getvalue()
    assert "\nlogged-output\r\n" in log.getvalue()
