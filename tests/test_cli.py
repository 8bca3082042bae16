"""The CLI: help for every stage, exit codes, clear errors for bad input, dry-run argv."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main, parse

DATA = Path(__file__).parent / "data"


def ntalab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command",
    ["images", "build", "boot", "inject", "run", "report", "repro", "bench", "scan", "bisect"],
)
def test_every_stage_has_help(command: str) -> None:
    out = ntalab(command, "--help")
    assert out.returncode == 0 and "usage: ntalab" in out.stdout


def test_bad_flag_is_refused_by_argparse_with_2() -> None:
    out = ntalab("boot", "-k", "debian-6.1", "--frobnicate")  # fails before any boot
    assert out.returncode == 2
    assert "unrecognized arguments: --frobnicate" in out.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["boot", "-k", "linux-0.01", "--dry-run"], "unknown kernel 'linux-0.01'"),
        (["images", "fetch", "debian-9"], "unknown kernel 'debian-9'; known: debian-6.1, "),
        (["run", "--nics", "e1000,ne2k"], "unknown NIC 'ne2k'"),
        (["run", "--shard", "3/2"], "--shard 3/2: I must be between 1 and N"),
        (["run", "--shard", "half"], "--shard takes I/N"),
        (["report", "/nonexistent"], "/nonexistent has no summary.json"),
    ],
)
def test_bad_usage_is_a_one_line_error_and_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ntalab: error: {message}")
    assert "Traceback" not in err


def test_boot_dry_run_prints_the_vng_command(capsys: pytest.CaptureFixture[str]) -> None:
    vmlinuz = DATA / "bzImage-header"  # a setup header, no kernel
    args = ["boot", "-k", str(vmlinuz), "--nics", "e1000-cb0", "--accel", "tcg", "--dry-run"]
    assert main(args) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[:3] == ["vng", "--run", str(vmlinuz)]
    assert "--disable-kvm" in argv
    assert "-device e1000,netdev=nic0,mac=52:54:00:4e:00:00" in argv[-1]


def test_images_list_shows_every_manifest_kernel_from_any_directory(tmp_path: Path) -> None:
    out = ntalab("images", "list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["debian-6.1", "debian-6.12", "debian-6.1-kasan", "debian-6.12-kasan"]


def test_what_follows_the_double_dash_is_the_scenario() -> None:
    """Options may follow GOOD BAD, and pytest's own options follow --, as with run."""
    args = parse(["bisect", "v1", "v2", "--repo", "r", "--repeat", "3", "--", "-k", "capture"])
    assert (args.good, args.bad, args.repo, args.repeat) == ("v1", "v2", "r", 3)
    assert args.pytest_args == ["-k", "capture"]
    assert parse(["run", "-k", "debian-6.1", "--", "-k", "x"]).pytest_args == ["-k", "x"]
    with pytest.raises(SystemExit):
        parse(["scan", "a.log", "--", "-k", "x"])
