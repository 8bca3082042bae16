"""The CLI: help for every stage, clear errors for bad input, dry-run argv."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from lab import REPO
from lab.cli import main


def ntalab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["images", "build", "boot", "inject", "run", "repro"])
def test_every_stage_has_help(command: str) -> None:
    out = ntalab(command, "--help")
    assert out.returncode == 0 and "usage: ntalab" in out.stdout


def test_bad_flag_is_refused_by_argparse() -> None:
    out = ntalab("boot", "-k", "debian-6.1", "--frobnicate")  # fails before any boot
    assert out.returncode == 2
    assert "unrecognized arguments: --frobnicate" in out.stderr


def test_unknown_kernel_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "-k", "linux-0.01", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntalab: error: unknown kernel 'linux-0.01'")
    assert "Traceback" not in err


def test_unknown_manifest_name_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "fetch", "debian-9"]) == 2
    assert "unknown kernel 'debian-9'; known: debian-6.1, debian-6.12" in capsys.readouterr().err


def test_boot_dry_run_prints_the_vng_command(capsys: pytest.CaptureFixture[str]) -> None:
    vmlinuz = REPO / "tests" / "data" / "bzImage-header"  # a setup header, no kernel
    args = ["boot", "-k", str(vmlinuz), "--nics", "e1000-cb0", "--accel", "tcg", "--dry-run"]
    assert main(args) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[:3] == ["vng", "--run", str(vmlinuz)]
    assert "--disable-kvm" in argv
    assert "-device e1000,netdev=nic0,mac=52:54:00:4e:00:00" in argv[-1]


def test_images_list_shows_every_manifest_kernel() -> None:
    out = ntalab("images", "list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["debian-6.1", "debian-6.12"]
