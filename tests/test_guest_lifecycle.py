"""A guest's life without a VM: a boot that stalls and is retried, and tests that clean up.

The guest is tests/data/fakeguest: a vng stand-in that prints what a stalled
TCG boot printed last and then either nothing (a stall) or a local shell.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab import LabError, kconfig
from lab.accel import Accel
from lab.guest import GUEST_SHELL, Guest, GuestBootError, GuestSpec
from lab.guestnet import GuestNet
from lab.guestside.protocol import TcpListen
from lab.images import Kernel
from lab.kernlog import kmsg_text
from lab.labenv import LabEnv
from lab.records import GuestInfo
from lab.testbed import Testbed
from tests.conftest import FAKE_GUEST

STALL_S = 2.0


@pytest.fixture
def kernel(tmp_path: Path) -> Kernel:
    """A kernel whose config has everything the lab needs (it is never booted)."""
    config = tmp_path / "config"
    config.write_text("".join(f"{n.options[0]}=y\n" for n in kconfig.REQUIRED))
    return Kernel("fake", "0.0-fake", tmp_path / "vmlinuz", None, config)


def fake_guest(kernel: Kernel, tmp_path: Path, *boots: str, timeout: float | None = None) -> Guest:
    state = tmp_path / "boots"
    state.mkdir(exist_ok=True)
    spec = GuestSpec(kernel, (), Accel("tcg", "test"), name="fake")
    launcher = [str(FAKE_GUEST / "vng"), str(state), *boots]
    return Guest(spec, tmp_path / "out", timeout, stall_s=STALL_S, launcher=launcher)


def test_a_stalled_boot_is_retried_once_and_recorded(kernel: Kernel, tmp_path: Path) -> None:
    with fake_guest(kernel, tmp_path, "stall", "ok") as g:
        assert g.sh.run("echo up").stdout == "up\n"
        assert g.info is not None
        assert [a.outcome for a in g.info.attempts] == ["stall", "ok"]
        assert g.info.retries == [g.info.attempts[0]]
    out = tmp_path / "out"
    stalled = g.info.attempts[0]
    assert stalled.console_log == "console-stalled-1.log"
    assert "Dquot-cache" in stalled.last_line
    assert "Dquot-cache" in (out / stalled.console_log).read_text()
    assert stalled.max_silence_s >= STALL_S
    saved = GuestInfo.from_dict(json.loads((out / "guest.json").read_text()))
    assert saved.retries == [stalled]


def test_a_boot_that_stalls_twice_is_a_boot_error_with_its_console(
    kernel: Kernel, tmp_path: Path
) -> None:
    """The error is the lab's, with the console's last lines, never a pexpect traceback."""
    guest = fake_guest(kernel, tmp_path, "stall")
    stalled = r"stalled: printed nothing for 2s before it started init \(and on the 1 attempt"
    with pytest.raises(GuestBootError, match=stalled) as e, guest:
        pass
    assert "VFS: Dquot-cache hash table entries" in str(e.value)
    info = json.loads((tmp_path / "out" / "guest.json").read_text())
    assert [a["outcome"] for a in info["attempts"]] == ["stall", "stall"]


BOOT_SPLAT = "KASAN: wild-memory-access Write in do_raw_spin_lock"


def test_a_kernel_bug_reported_during_boot_is_retried_and_named(
    kernel: Kernel, tmp_path: Path
) -> None:
    """A report before the shell is up (one seen on a 6.12-kasan boot) is not any test's,
    and leaves a kernel that can no longer report NTA's bugs: the guest boots again."""
    with fake_guest(kernel, tmp_path, "splat", "ok") as g:
        assert g.info is not None
        assert [a.outcome for a in g.info.attempts] == ["splat", "ok"]
        assert g.new_splats() == []  # nothing left over for the first test
    splat = g.info.attempts[0]
    assert splat.splat == BOOT_SPLAT
    assert splat.retry_reason == f"kernel bug reported during boot: {BOOT_SPLAT}"
    assert splat.console_log == "console-splat-1.log"
    assert "do_raw_spin_lock" in (tmp_path / "out" / splat.console_log).read_text()
    assert "do_raw_spin_lock" not in (tmp_path / "out" / "console.log").read_text()


def test_a_kernel_that_reports_a_bug_on_every_boot_is_a_boot_error_naming_it(
    kernel: Kernel, tmp_path: Path
) -> None:
    guest = fake_guest(kernel, tmp_path, "splat")
    every = rf"before any test ran, on every attempt \(2\): {BOOT_SPLAT}"
    with pytest.raises(GuestBootError, match=every), guest:
        pass
    info = json.loads((tmp_path / "out" / "guest.json").read_text())
    assert [a["outcome"] for a in info["attempts"]] == ["splat", "splat"]


def test_a_kasan_guest_reports_every_bug_not_only_its_first(kernel: Kernel, tmp_path: Path) -> None:
    """Many tests run on one boot: each one's KASAN reports must reach it (multi-shot),
    once, also when a reproducer bundle's recorded command line already has it."""
    spec = GuestSpec(kernel, (), Accel("tcg", "test"), name="fake")
    plain = Guest(spec, tmp_path / "out")
    plain.close()
    assert "--append" not in plain.argv
    assert kernel.config is not None
    with kernel.config.open("a") as f:
        f.write("CONFIG_KASAN=y\n")
    for given in (spec, replace(spec, append=("kasan_multi_shot",))):
        g = Guest(given, tmp_path / "out")
        g.close()
        assert g.spec.append == ("kasan_multi_shot",)
        assert g.argv[g.argv.index("--append") + 1] == "kasan_multi_shot"


def test_a_silent_userspace_is_not_a_stall(kernel: Kernel, tmp_path: Path) -> None:
    """Once the kernel started init, a silence longer than the stall limit is waited out
    (a KASAN guest's userspace under TCG), and not retried."""
    with fake_guest(kernel, tmp_path, "slow-init") as g:
        assert g.info is not None
        assert [a.outcome for a in g.info.attempts] == ["ok"]
        assert g.info.attempts[0].max_silence_s >= STALL_S


def test_a_userspace_that_never_gives_a_shell_times_out(kernel: Kernel, tmp_path: Path) -> None:
    guest = fake_guest(kernel, tmp_path, "init-hang", timeout=5.0)
    with pytest.raises(GuestBootError, match=r"was not up within 5s") as e, guest:
        pass
    assert "as init process" in str(e.value)
    info = json.loads((tmp_path / "out" / "guest.json").read_text())
    assert [a["outcome"] for a in info["attempts"]] == ["timeout"]


def test_the_guest_shell_reads_no_rc_file(tmp_path: Path) -> None:
    """The guest runs the host's userspace: its shell must not run the host user's rc files."""
    home = tmp_path / "home"
    home.mkdir()
    for rc in (".bashrc", ".bash_profile", ".profile"):
        (home / rc).write_text("echo RC-FILE-RAN\n")
    shell = tmp_path / "guest-shell"
    shell.write_text(GUEST_SHELL)
    shell.chmod(0o755)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    proc = subprocess.run([str(shell)], input="echo shell-up\n", capture_output=True, text=True,
                          env=env, timeout=30)  # fmt: skip
    assert "shell-up" in proc.stdout
    assert "RC-FILE-RAN" not in proc.stdout + proc.stderr


@pytest.fixture
def bed(kernel: Kernel, tmp_path: Path) -> Iterator[Testbed]:
    with fake_guest(kernel, tmp_path, "ok") as g:
        bed = Testbed(g, [], GuestNet(g.sh, g.features), kernel, "none", g.outdir)
        yield bed
        bed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen(env: LabEnv, tag: str, port: int) -> None:
    """A guest program holding an exclusive resource (a listening port, as a reader holds
    its attachment), started for the rest of the test."""
    env.bkg(tag, TcpListen("127.0.0.1", port), ready=True)


def test_a_failed_test_leaves_nothing_running_for_the_next(bed: Testbed) -> None:
    port = free_port()
    restored: list[str] = []
    with pytest.raises(AssertionError), LabEnv(bed, "fails") as env:
        listen(env, "first", port)
        env.defer(restored.append, "param")
        raise AssertionError("the test fails half-way")
    assert restored == ["param"]
    with LabEnv(bed, "next") as env:
        listen(env, "second", port)  # would fail: the port is still held


def test_without_the_undo_the_next_test_fails(bed: Testbed) -> None:
    """The check above can fail: a program not stopped holds its port for the next test."""
    port = free_port()
    leaked = bed.start("leak", TcpListen("127.0.0.1", port), ready=True)
    try:
        leaked.wait_ready()
        with LabEnv(bed, "next") as env, pytest.raises(LabError, match="exited 1"):
            listen(env, "second", port)
    finally:
        leaked.stop()


SPLATS = Path(__file__).parent / "data" / "splats"


def as_kmsg(log: Path, first_seq: int) -> str:
    """A real captured report, as /dev/kmsg hands it out (what the guest streams)."""
    records = []
    for n, line in enumerate(log.read_text().splitlines()):
        text = re.sub(r"^(\[[^\]]*\]\s*)+", "", line)
        records.append(f"4,{first_seq + n},{5_000_000 + n},-;{text}\n")
        records.append(" SUBSYSTEM=net\n")  # a key=value line, as the kernel adds
    return "".join(records)


def test_kmsg_records_read_as_dmesg_prints_them() -> None:
    text = kmsg_text("6,7,1500000,-;e1000: eth0 NIC Link is Up\n DEVICE=+pci:0000\n")
    assert text == "[    1.500000] e1000: eth0 NIC Link is Up\n\n"


def test_each_kernel_report_is_told_once_to_the_test_it_came_in(bed: Testbed) -> None:
    """The guest's kernel log is scanned as it grows: a report is the finding of the test
    during which it came, and of no later one; a report a test expects is its own."""
    env = LabEnv(bed, "reports")
    g = bed.guest
    assert g.new_splats() == []
    with g.kmsg_log.open("a") as f:
        f.write(as_kmsg(SPLATS / "warning.log", 100))
    first = g.new_splats()
    assert [s.kind for s in first] == ["warning"]
    assert first[0].source == str(g.kmsg_log) and first[0].line_no > 1
    assert g.new_splats() == []
    with g.kmsg_log.open("a") as f:
        f.write(as_kmsg(SPLATS / "kasan.log", 1000) + as_kmsg(SPLATS / "refcount.log", 2000))
    assert [s.kind for s in env.expect_splat("kasan", timeout=5)] == ["kasan"]
    assert [s.kind for s in env.unexpected_splats()] == ["refcount"]
    assert env.unexpected_splats() == []
    with pytest.raises(LabError, match="a kasan report"):
        env.expect_splat("kasan", timeout=1)
