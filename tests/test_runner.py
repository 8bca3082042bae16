"""``ntalab run``'s driver end to end, without guests: real pytest processes, one per guest,
over a scenarios dir of tests that need no VM; shards merged equal one unsharded run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab import kconfig, report, runner
from lab.report import RunResult
from lab.wait import wait_until

SCENARIOS = """
import pytest

pytestmark = pytest.mark.lab


def test_on_each_nic(nic, guest_request):
    assert nic in guest_request.nic_names


def test_once_per_guest(guest_request):
    assert guest_request.nic_set == "all"


def test_fails_on_one_kernel_and_nic(nic, guest_request):
    assert (guest_request.kernel.endswith("tree-b"), nic) != (True, "e1000")
"""

# The NIC of a guest without one: the plugin's own fixture would boot the guest.
CONFTEST = """
import pytest


@pytest.fixture
def nic(request):
    return request.param
"""


def fake_tree(root: Path, name: str) -> str:
    """A kernel build tree with the config the lab checks (nothing in it ever boots)."""
    tree = root / name
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(b"")
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text(f"6.0.0-{name}\n")
    needs = [n.options[0] for n in kconfig.REQUIRED] + list(kconfig.DRIVERS.values())
    (tree / ".config").write_text("".join(f"{o}=y\n" for o in needs))
    return str(tree)


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (d / "test_fake.py").write_text(textwrap.dedent(SCENARIOS))
    return d


def run(kernels: list[str], scenarios: Path, out: Path, shard: runner.Shard | None) -> RunResult:
    requests = runner.plan(kernels, ["all"], ["default"], "tcg", shard)
    progress = runner.Progress(lambda text: None)
    guests = runner.run_guests(requests, out, 2, scenarios, (), progress)
    result = RunResult(guests, 0.0, str(shard) if shard else "")
    report.write(result, out)
    return result


def outcomes(run: RunResult) -> set[tuple[str, str, str | None, str]]:
    return {(g.request.id, c.scenario, c.nic, c.outcome) for g in run.guests for c in g.cases}


def test_two_shards_merged_equal_one_run(tmp_path: Path, scenarios: Path) -> None:
    kernels = [fake_tree(tmp_path, "tree-a"), fake_tree(tmp_path, "tree-b")]
    whole = run(kernels, scenarios, tmp_path / "whole", None)
    parts = [run(kernels, scenarios, tmp_path / f"s{i}", runner.Shard(i, 2)) for i in (1, 2)]
    assert [len(p.guests) for p in parts] == [1, 1]
    assert not {g.request.id for g in parts[0].guests} & {g.request.id for g in parts[1].guests}
    # Every guest ran every scenario: 2 guests x (3 NICs x 2 + 1).
    assert len(outcomes(whole)) == 14
    failed = {o for o in outcomes(whole) if o[3] == "fail"}
    assert failed == {(f"{kernels[1]}/all", "fails_on_one_kernel_and_nic", "e1000", "fail")}

    merged_dir = tmp_path / "merged"
    cli = [sys.executable, "-m", "lab", "report", "--out", str(merged_dir)]
    proc = subprocess.run([*cli, *(str(tmp_path / f"s{i}") for i in (1, 2))], text=True,
                          capture_output=True, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the merged run has a failure
    merged = RunResult.load(merged_dir)
    assert outcomes(merged) == outcomes(whole)
    assert report.matrix_table(report.cells(merged)) == report.matrix_table(report.cells(whole))
    for name in ("junit.xml", "results.ktap", "summary.json"):
        assert (merged_dir / name).is_file()


def test_named_scenario_files_replace_the_scenarios_dir(tmp_path: Path) -> None:
    one = tmp_path / "test_one.py"
    one.write_text("")
    assert runner.selection(Path("/s"), ["-x"]) == ["/s", "-x"]
    assert runner.selection(Path("/s"), [str(one) + "::test_a", "-x"]) == [
        f"{one}::test_a",
        "-x",
    ]


def test_an_interrupted_run_leaves_no_guest_running(tmp_path: Path) -> None:
    """Ctrl-C (or a CI system's SIGTERM) while guests run: every guest's pytest is
    interrupted and gone when run_guests gives up, whatever it had started."""
    d = tmp_path / "scenarios"
    d.mkdir()
    pidfile = tmp_path / "pid"
    (d / "test_slow.py").write_text(
        "import os, pathlib, time, pytest\n\n\n@pytest.mark.lab\ndef test_runs_long():\n"
        f"    pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))\n    time.sleep(600)\n"
    )
    requests = runner.plan([fake_tree(tmp_path, "tree-a")], ["all"], ["default"], "tcg")

    def interrupt(_text: str) -> None:
        wait_until(pidfile.exists, 30, "the test running")
        raise KeyboardInterrupt  # Ctrl-C

    progress = runner.Progress(interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run_guests(requests, tmp_path / "out", 1, d, (), progress)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_guest_left_nothing_to_run_is_no_error_and_nothing_run_is_no_pass(
    tmp_path: Path, scenarios: Path
) -> None:
    """-k picks a scenario that runs in default guests only: the debug guest has nothing
    to run, which is no error of the guest's; a selection no guest runs is no pass."""
    tree = fake_tree(tmp_path, "tree-a")
    requests = runner.plan([tree], ["all"], ["default", "debug"], "tcg")
    progress = runner.Progress(lambda text: None)
    guests = runner.run_guests(
        requests, tmp_path / "out", 1, scenarios, ["-k", "once_per_guest"], progress
    )
    by_profile = {g.request.profile: g for g in guests}
    assert by_profile["debug"].error == "" and by_profile["debug"].cases == []
    assert [c.scenario for c in by_profile["default"].cases] == ["once_per_guest"]
    assert RunResult(guests, 0.0).passed
    nothing = runner.run_guests(
        requests, tmp_path / "none", 1, scenarios, ["-k", "no_such_scenario"], progress
    )
    assert [g.error for g in nothing] == ["", ""]
    assert not RunResult(nothing, 0.0).passed
