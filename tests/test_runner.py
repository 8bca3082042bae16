"""``ntalab run``'s driver end to end, without guests: real pytest processes, one per guest,
over a scenarios dir of tests that need no VM; the shards of a plan merged equal one
unsharded run, and a plan of the real matrix covers every scenario once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from lab import images, kconfig, paths, plan, report, runner
from lab.events import Event
from lab.records import (
    BootOutcome,
    EventKind,
    GuestRequest,
    LeftOut,
    Outcome,
    RunResult,
    Verdict,
)
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


@pytest.mark.last
def test_checks_the_whole_boot(guest_request):
    assert guest_request.kernel
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


def run(
    requests: list[GuestRequest], scenarios: Path, out: Path, shard: str = "", digest: str = ""
) -> RunResult:
    progress = runner.Progress(lambda text: None)
    guests = runner.run_guests(requests, out, 2, scenarios, (), progress)
    result = RunResult(guests, 0.0, shards=[shard] if shard else [], plan=digest)
    report.write(result, out)
    return result


def outcomes(run: RunResult) -> set[tuple[str, str, str | None, str]]:
    return {(g.request.id, c.scenario, c.nic, c.outcome) for g in run.guests for c in g.cases}


def test_six_shards_of_a_plan_merged_equal_one_run(tmp_path: Path, scenarios: Path) -> None:
    kernels = [fake_tree(tmp_path, "tree-a"), fake_tree(tmp_path, "tree-b")]
    whole_guests = plan.guests(kernels, ["all"], ["default"], "tcg")
    whole = run(whole_guests, scenarios, tmp_path / "whole")
    # Every guest ran every scenario: 2 guests x (3 NICs x 2 + 2).
    assert len(outcomes(whole)) == 16
    failed = {o for o in outcomes(whole) if o[3] == Outcome.FAIL}
    assert failed == {(f"{kernels[1]}/all", "fails_on_one_kernel_and_nic", "e1000", "fail")}

    # Tests that take long against a boot: the plan splits both guests.
    times = {(g.request.id, c.name): 60.0 for g in whole.guests for c in g.cases}
    timings = plan.Timings(times, {r.id: 10.0 for r in whole_guests})
    the_plan = runner.plan_shards(whole_guests, 6, scenarios, (), timings, 2)
    shards = [the_plan.shard(plan.Shard(i, 6)) for i in range(1, 7)]
    assert all(shards) and max(len(parts) for parts in shards) <= 2
    for gid in {r.id for r in whole_guests}:
        parts = [r for parts in shards for r in parts if r.id == gid]
        assert len(parts) > 1 and {r.part for r in parts} == {f"{k}/{len(parts)}" for k in
                                                             range(1, len(parts) + 1)}  # fmt: skip
        cases = [c for r in parts for c in r.cases]
        lasts = [c for c in cases if c.endswith("test_checks_the_whole_boot")]
        assert len(lasts) == len(parts)  # in every part, once
        assert len(cases) - len(lasts) == len(set(cases) - set(lasts)) == 7  # the rest once
    for i, requests in enumerate(shards, 1):
        run(requests, scenarios, tmp_path / f"s{i}", f"{i}/6", the_plan.digest)

    merged_dir = tmp_path / "merged"
    cli = [sys.executable, "-m", "lab", "report", "--out", str(merged_dir)]
    proc = subprocess.run([*cli, *(str(tmp_path / f"s{i}") for i in range(1, 7))], text=True,
                          capture_output=True, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the merged run has a finding
    merged = RunResult.load(merged_dir)
    assert merged.shards == [f"{i}/6" for i in range(1, 7)] and not merged.missing
    assert outcomes(merged) == outcomes(whole)
    assert report.matrix_table(report.cells(merged)) == report.matrix_table(report.cells(whole))
    for name in ("junit.xml", "results.ktap", "summary.json"):
        assert (merged_dir / name).is_file()
    # Five shards of six are not the run: the lab did not run the sixth.
    proc = subprocess.run([*cli[:-1], str(tmp_path / "five"),
                           *(str(tmp_path / f"s{i}") for i in range(1, 6))],
                          text=True, capture_output=True, check=False)  # fmt: skip
    assert "missing: shard 6/6 of the plan" in proc.stdout
    assert proc.returncode == 1  # s1..s5 hold the finding; without it:
    finding = next(
        i for i in range(1, 7) if RunResult.load(tmp_path / f"s{i}").verdict is Verdict.FINDING
    )
    rest = [str(tmp_path / f"s{i}") for i in range(1, 7) if i != finding]
    proc = subprocess.run([*cli[:-1], str(tmp_path / "clean"), *rest], text=True,
                          capture_output=True, check=False)  # fmt: skip
    assert proc.returncode == 3, proc.stdout  # the lab could not run a shard: not a pass


def test_a_plan_of_the_whole_matrix_covers_every_scenario_once(tmp_path: Path) -> None:
    """The real scenarios over the real manifest, every kernel (sanitizer ones included,
    known from their fragments without building them) and profile, as six shards."""
    manifest = images.load_manifest()
    kernels = list(manifest)
    sanitizers = runner.sanitizer_kernels(kernels)
    assert sanitizers == {"debian-6.1-kasan", "debian-6.12-kasan"}
    whole = plan.guests(kernels, ["all"], ["default", "debug"], "tcg", sanitizers)
    assert len(whole) == 6
    scenarios = paths.sources().scenarios
    one = runner.plan_shards(whole, 1, scenarios, (), plan.Timings.of(None), 2)
    six = runner.plan_shards(whole, 6, scenarios, (), plan.Timings.of(None), 2)
    every = {e.request.id: e.request.cases for e in one.entries}
    assert len(every["debian-6.1/all"]) > 40 and len(every["debian-6.1-kasan/all"]) > 15
    for gid, cases in every.items():
        parts = [e.request for e in six.entries if e.request.id == gid]
        got = [c for r in parts for c in r.cases]
        last = [c for c in cases if "test_sanitizers.py" in c]  # the two marked last
        assert sorted(set(got)) == sorted(cases), gid
        assert len(got) == len(cases) + (len(parts) - 1) * len(last), gid
    assert sorted({e.shard for e in six.entries}) == [f"{i}/6" for i in range(1, 7)]
    print("\n" + six.text().split("\n  ")[0])
    for i in range(1, 7):
        print(f"shard {i}/6: expected {six.expected_s(f'{i}/6'):.0f}s")


def test_named_scenario_files_replace_the_scenarios_dir(tmp_path: Path) -> None:
    one = tmp_path / "test_one.py"
    one.write_text("")
    assert plan.selection(Path("/s"), ["-x"]) == ["/s", "-x"]
    assert plan.selection(Path("/s"), [str(one) + "::test_a", "-x"]) == [
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
    requests = plan.guests([fake_tree(tmp_path, "tree-a")], ["all"], ["default"], "tcg")

    def interrupt(_text: str) -> None:
        wait_until(pidfile.exists, 30, "the test running")
        raise KeyboardInterrupt  # Ctrl-C

    progress = runner.Progress(interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run_guests(requests, tmp_path / "out", 1, d, (), progress)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_latest_links_a_first_run_under_a_fresh_results_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ntalab run --out results/x`` on a clone with no results/ yet."""
    monkeypatch.chdir(tmp_path)
    out = (tmp_path / "results" / "first").resolve()
    runner.link_latest(out)
    assert (tmp_path / "results" / "latest").resolve() == out


def test_a_run_says_what_it_left_out_first(tmp_path: Path) -> None:
    left = LeftOut("debian-6.1-kasan", "not built: make sanitizer-kernels")
    lines: list[str] = []
    result = runner.run_matrix([], tmp_path, 1, say=lines.append, left_out=[left])
    assert lines[0].endswith("] left out: debian-6.1-kasan (not built: make sanitizer-kernels)")
    assert RunResult.load(tmp_path).left_out == [left]
    assert result.verdict is Verdict.LAB  # it ran nothing at all


CLASSIFIED = """
import pytest

from lab import InfraError, LabError

pytestmark = pytest.mark.lab


@pytest.fixture
def guest_that_did_not_boot():
    raise InfraError("guest stalled twice before init")


@pytest.fixture
def module_that_did_not_load():
    raise LabError("guest command failed (1): insmod nta.ko")


def test_the_lab_broke_in_setup(guest_that_did_not_boot):
    pass


def test_the_module_broke_in_setup(module_that_did_not_load):
    pass


def test_an_assertion():
    assert 1 + 1 == 3


def test_the_lab_broke_in_the_body():
    raise InfraError("NIC nic0: QEMU is not listening")
"""


def test_a_failure_of_the_lab_is_an_error_any_other_a_finding(tmp_path: Path) -> None:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "test_classified.py").write_text(CLASSIFIED)
    requests = plan.guests([fake_tree(tmp_path, "tree-a")], ["e1000"], ["default"], "tcg")
    result = run(requests, d, tmp_path / "out")
    got = {c.scenario: c.outcome for g in result.guests for c in g.cases}
    assert got == {
        "the_lab_broke_in_setup": Outcome.ERROR,
        "the_module_broke_in_setup": Outcome.FAIL,
        "an_assertion": Outcome.FAIL,
        "the_lab_broke_in_the_body": Outcome.ERROR,
    }
    assert result.verdict is Verdict.FINDING
    lab_only = [replace(g, cases=[c for c in g.cases if c.outcome is Outcome.ERROR])
                for g in result.guests]  # fmt: skip
    assert RunResult(lab_only, 1.0).verdict is Verdict.LAB


def test_a_guest_left_nothing_to_run_is_no_error_and_nothing_run_is_no_pass(
    tmp_path: Path, scenarios: Path
) -> None:
    """-k picks a scenario that runs in default guests only: the debug guest has nothing
    to run, which is no error of the guest's; a selection no guest runs is no pass."""
    tree = fake_tree(tmp_path, "tree-a")
    requests = plan.guests([tree], ["all"], ["default", "debug"], "tcg")
    progress = runner.Progress(lambda text: None)
    guests = runner.run_guests(
        requests, tmp_path / "out", 1, scenarios, ["-k", "once_per_guest"], progress
    )
    by_profile = {g.request.profile: g for g in guests}
    assert by_profile["debug"].error == "" and by_profile["debug"].cases == []
    assert [c.scenario for c in by_profile["default"].cases] == ["once_per_guest"]
    assert RunResult(guests, 0.0).verdict is Verdict.PASSED
    nothing = runner.run_guests(
        requests, tmp_path / "none", 1, scenarios, ["-k", "no_such_scenario"], progress
    )
    assert [g.error for g in nothing] == ["", ""]
    assert RunResult(nothing, 0.0).verdict is Verdict.LAB  # no pass, and no finding
    assert "verdict: lab could not run: no test ran" in report.printable(RunResult(nothing, 0.0))


STUDIES = """
import pytest

pytestmark = pytest.mark.lab


def test_in_the_matrix():
    pass


@pytest.mark.investigation("text_patching")
def test_text_patching_a_study():
    pass
"""


def test_a_study_runs_only_when_named(tmp_path: Path) -> None:
    """An investigation (a long study, not a regression check) is left out of a run, and
    runs when -k names it."""
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "test_studies.py").write_text(STUDIES)
    requests = plan.guests([fake_tree(tmp_path, "tree-a")], ["e1000"], ["default"], "tcg")
    progress = runner.Progress(lambda text: None)
    ran = {}
    for name, args in (("all", ()), ("named", ("-k", "text_patching"))):
        guests = runner.run_guests(requests, tmp_path / name, 1, d, args, progress)
        ran[name] = {c.scenario for g in guests for c in g.cases}
    assert ran == {"all": {"in_the_matrix"}, "named": {"text_patching_a_study"}}


def test_progress_says_why_a_boot_was_retried_and_what_was_restored() -> None:
    lines: list[str] = []
    progress = runner.Progress(lines.append)
    guest = "debian-6.1/all"
    for event in (
        Event(0.0, guest, EventKind.BOOTED, detail="70s", outcome=BootOutcome.STALL),
        Event(0.0, guest, EventKind.BOOTED, detail="24s", outcome=BootOutcome.SPLAT),
        Event(0.0, guest, EventKind.BOOTED, detail="24s"),
        Event(0.0, guest, EventKind.RESTORED, test="test_b", detail="restored after test_a: x"),
        Event(0.0, guest, EventKind.DONE, test="test_b", outcome=Outcome.PASS, detail="1/1"),
    ):
        progress.event(event)
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"{guest}: up in 70s after an infrastructure retry (boot stalled)",
        f"{guest}: up in 24s after an infrastructure retry (kernel bug during boot)",
        f"{guest}: up in 24s",
        f"{guest}: test_b: restored after test_a: x",
        f"{guest}: test_b ok (1/1)",
    ]


def test_a_guest_of_a_nic_list_gets_a_directory_virtme_ng_takes() -> None:
    """vng --rwdir takes a comma as a separator: 'ntalab run --nics e1000,rtl8139' could
    not boot its guest (seen: "invalid --rwdir parameter")."""
    req = GuestRequest(kernel="debian-6.1", nic_set="e1000,rtl8139", part="2/3")
    assert req.dirname == "debian-6.1_e1000+rtl8139.part2of3"
    assert "," not in req.dirname and "/" not in req.dirname


ON_E1000 = """
import pytest

pytestmark = pytest.mark.lab


def test_on_every_nic(nic):
    pass


@pytest.mark.nic_variants("e1000")
def test_on_e1000_only(nic):
    pass
"""


def test_a_scenario_limited_to_nic_variants_runs_on_those_only(tmp_path: Path) -> None:
    """nic_variants deselects the other NICs' cases (a guest without one runs none)."""
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "test_variants.py").write_text(ON_E1000)
    requests = plan.guests([fake_tree(tmp_path, "tree-a")], ["all"], ["default"], "tcg")
    guests = runner.run_guests(
        requests, tmp_path / "out", 1, d, [], runner.Progress(lambda text: None)
    )
    ran = sorted((c.scenario, c.nic) for g in guests for c in g.cases)
    assert ran == [
        ("on_e1000_only", "e1000"),
        ("on_every_nic", "e1000"),
        ("on_every_nic", "e1000-cb0"),
        ("on_every_nic", "rtl8139"),
    ]
