"""The CLI: help for every stage, exit codes (a finding is 1, the lab failing 3), clear errors
for bad input, dry-run argv."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import InfraError, LabError, UsageError, cli
from lab.cli import main, parse
from lab.console import CmdResult, CommandFailed
from lab.guest import GuestBootError
from lab.records import (
    CaseResult,
    GuestInfo,
    GuestRequest,
    GuestResult,
    Outcome,
    RunResult,
)

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
        (["run", "--json"], "--json goes with --list"),
        (["run", "--plan", "plan.json"], "--plan needs --shard I/N"),
        (["run", "--plan", "/nonexistent", "--shard", "1/6"], "--plan /nonexistent: not what"),
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


def results(tmp_path: Path, name: str, *guests: GuestResult) -> str:
    out = tmp_path / name
    out.mkdir()
    RunResult(list(guests), 1.0).save(out)
    return str(out)


BOOTED = GuestInfo("g", "debian-6.1", "6.1.0-56-amd64", ["e1000"], "tcg", "", [], 20.0)


@pytest.mark.parametrize(
    ("outcome", "error", "status", "verdict"),
    [
        (Outcome.PASS, "", 0, "verdict: passed (exit 0)"),
        (Outcome.FAIL, "", 1, "verdict: finding: 1 test(s) failed (exit 1)"),
        (Outcome.ERROR, "", 3, "verdict: lab could not run: debian-6.1/e1000 (exit 3)"),
        (None, "guest did not boot", 3, "verdict: lab could not run: debian-6.1/e1000 (exit 3)"),
        (
            None,
            "",
            3,
            "verdict: lab could not run: no test ran (the selection matched none) (exit 3)",
        ),
    ],
)
def test_the_exit_status_tells_a_finding_from_the_lab_failing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    outcome: Outcome | None,
    error: str,
    status: int,
    verdict: str,
) -> None:
    cases = [CaseResult("delivery", "e1000", outcome, 1.0, "m")] if outcome else []
    guest = GuestResult(GuestRequest("debian-6.1", "e1000"), cases, BOOTED, error)
    run = results(tmp_path, "run", guest)
    assert main(["report", run, "--out", str(tmp_path / "merged")]) == status
    assert verdict in capsys.readouterr().out.splitlines()
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert summary["verdict"] == verdict.split(": ")[1].split(" (")[0].split(":")[0]


def test_a_finding_wins_over_the_lab_failing_elsewhere(tmp_path: Path) -> None:
    failed = GuestResult(GuestRequest("debian-6.1", "e1000"),
                         [CaseResult("delivery", "e1000", Outcome.FAIL, 1.0)], BOOTED)  # fmt: skip
    broken = GuestResult(GuestRequest("debian-6.12", "e1000"), [], None, "did not boot")
    run = results(tmp_path, "run", failed, broken)
    assert main(["report", run, "--out", str(tmp_path / "merged")]) == 1


def fails_with(error: BaseException) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        raise error

    return run


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UsageError("bad"), 2),
        (InfraError("no vng"), 3),
        (GuestBootError("stalled twice"), 3),
        (LabError("apt-get failed"), 3),
        (CommandFailed(CmdResult("insmod nta.ko", 1, "", "", 0.1)), 3),
        (RuntimeError("a bug of the lab's"), 3),
        (KeyboardInterrupt(), 130),
    ],
)
def test_every_error_class_maps_to_its_status(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, status: int
) -> None:
    monkeypatch.setattr(cli, "cmd_images", fails_with(error))
    assert main(["images", "list"]) == status


def test_merging_results_of_two_plans_is_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guest = GuestResult(GuestRequest("debian-6.1", "e1000"), [], BOOTED)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    RunResult([guest], 1.0, shards=["1/2"], plan="p1").save(a)
    RunResult([], 1.0, shards=["2/2"], plan="p2").save(b)
    assert main(["report", str(a), str(b)]) == 2
    assert "different shard plans" in capsys.readouterr().err


def test_a_default_run_says_which_kernels_it_leaves_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a machine without the sanitizer kernels built (an empty cache here), the plan of a
    default run names them and the command that builds them; nothing is fetched to plan."""
    monkeypatch.setenv("NTALAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no results/latest to take times from
    assert main(["run", "--list", "--boot-profile", "default", "--", "-k", "smoke"]) == 0
    out, err = capsys.readouterr()
    for name in ("debian-6.1-kasan", "debian-6.12-kasan"):
        reason = f"not built: make sanitizer-kernels, or ntalab images build {name}"
        assert f"ntalab: left out: {name} ({reason})" in err.splitlines()
    assert out.startswith("shard 1/1: expected ")
    assert "  debian-6.1/all: 3 tests, expected 58s" in out.splitlines()  # 25 s boot + 3 x 11
    assert not (tmp_path / "cache" / "kernels").exists()


def test_what_follows_the_double_dash_is_the_scenario() -> None:
    """Options may follow GOOD BAD, and pytest's own options follow --, as with run."""
    args = parse(["bisect", "v1", "v2", "--repo", "r", "--repeat", "3", "--", "-k", "capture"])
    assert (args.good, args.bad, args.repo, args.repeat) == ("v1", "v2", "r", 3)
    assert args.pytest_args == ["-k", "capture"]
    assert parse(["run", "-k", "debian-6.1", "--", "-k", "x"]).pytest_args == ["-k", "x"]
    with pytest.raises(SystemExit):
        parse(["scan", "a.log", "--", "-k", "x"])
