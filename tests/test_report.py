"""The report stage on typed results: matrix, KTAP (read back by the kernel's own kunit.py
parser), JUnit, merging shards, and the shard plan."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from lab import images, plan, report
from lab.records import (
    BootAttempt,
    BootOutcome,
    CaseResult,
    GuestInfo,
    GuestRequest,
    GuestResult,
    LeftOut,
    Outcome,
    RunResult,
    Verdict,
)

KUNIT_SOURCE = ("linux-source-6.1", "6.1.192-2")


def info(retried: bool = False) -> GuestInfo:
    ok = BootAttempt(BootOutcome.OK, 18.2, "# ", 3.0, "console.log")
    stall = BootAttempt(
        BootOutcome.STALL, 45.0, "VFS: Dquot-cache hash table entries: 512", 45.0, "c1.log"
    )
    attempts = [stall, ok] if retried else [ok]
    return GuestInfo(
        "g",
        "debian-6.1",
        "6.1.0-56-amd64",
        ["e1000", "rtl8139"],
        "tcg",
        "probe",
        [],
        18.2,
        attempts,
    )


def sample() -> RunResult:
    g1 = GuestResult(
        GuestRequest("debian-6.1", "e1000,rtl8139"),
        [
            CaseResult("delivery", "e1000", Outcome.PASS, 41.2, figures={"e1000": "1000/1000"}),
            CaseResult(
                "delivery", "rtl8139", Outcome.FAIL, 12.0, "AssertionError: rtl8139 lost 1 # x"
            ),
            CaseResult(
                "unload",
                None,
                Outcome.PASS,
                5.0,
                figures={"e1000": "200/200", "rtl8139": "199/200"},
            ),
        ],
        info(retried=True),
        seconds=80.0,
    )
    g2 = GuestResult(
        GuestRequest("debian-6.12", "e1000-cb0", "debug"),
        [CaseResult("delivery", "e1000-cb0", Outcome.SKIP, 0.1, "not on this kernel")],
        info(),
        seconds=30.0,
    )
    g3 = GuestResult(
        GuestRequest("debian-6.12", "e1000"), [], None, "guest did not boot: stalled", 300.0
    )
    return RunResult([g1, g2, g3], 400.0)


def test_matrix_rows_per_nic_and_guest_level_scenarios_fill_every_row() -> None:
    grid = report.cells(sample())
    assert grid[("debian-6.1/e1000", "delivery")] == report.Cell(
        Outcome.PASS, 41.2, "", "1000/1000"
    )
    assert grid[("debian-6.1/rtl8139", "delivery")].outcome == "fail"
    assert grid[("debian-6.1/rtl8139", "unload")].figure == "199/200"
    assert grid[("debian-6.12/e1000-cb0/debug", "delivery")].outcome == "skip"
    assert grid[("debian-6.12/e1000", "(guest)")].outcome == "error"
    table = report.matrix_table(grid).splitlines()
    legend = [line.split(": ") for line in table[: table.index("")]]
    assert [r for _, r in legend][:2] == ["debian-6.1/e1000", "debian-6.1/rtl8139"]
    columns = {r: int(n) for n, r in legend}
    head = table.index("") + 1
    assert table[head].split()[-1] == str(len(legend))
    rows = {line.split(" (")[0]: line.split()[-len(legend) :] for line in table[head + 2 :]
            if line and not line.startswith(" ") and " (" in line}  # fmt: skip
    assert rows["delivery"][columns["debian-6.1/e1000"] - 1] == "ok"
    assert rows["delivery"][columns["debian-6.1/rtl8139"] - 1] == "FAIL"
    assert rows["(guest)"][columns["debian-6.1/e1000"] - 1] == "-"
    assert "    debian-6.1/e1000: 1000/1000" in table
    assert "    debian-6.1/rtl8139: 199/200" in table
    assert "failures:" in table
    assert any(
        line.startswith("  delivery on debian-6.1/rtl8139: AssertionError") for line in table
    )


def test_guest_lines_name_a_boot_retry() -> None:
    lines = report.guest_lines(sample())
    assert "; boot retried: boot stalled after 'VFS: Dquot-cache" in lines[0]
    assert lines[2].startswith("guest debian-6.12/e1000: did not boot: guest did not boot")


def test_a_guest_left_nothing_to_run_is_not_called_unbooted() -> None:
    idle = GuestResult(GuestRequest("debian-6.1", "all", "debug"), [], None, "", 0.0)
    run = replace(sample(), guests=[idle])
    assert report.guest_lines(run) == [
        "guest debian-6.1/all/debug: nothing selected to run, not booted"
    ]


def test_summary_round_trips(tmp_path: Path) -> None:
    run = sample()
    report.write(run, tmp_path)
    assert RunResult.load(tmp_path) == run


def test_junit_has_a_suite_per_guest_and_a_case_per_test(tmp_path: Path) -> None:
    root = ET.fromstring(report.junit(sample()))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == [
        "debian-6.1/e1000,rtl8139",
        "debian-6.12/e1000-cb0/debug",
        "debian-6.12/e1000",
    ]
    g1 = suites["debian-6.1/e1000,rtl8139"]
    assert (g1.get("tests"), g1.get("failures")) == ("3", "1")
    names = [c.get("name") for c in g1.iter("testcase")]
    assert names == ["delivery.e1000", "delivery.rtl8139", "unload"]
    assert suites["debian-6.12/e1000"].find("testcase/error") is not None


@pytest.fixture(scope="module")
def kunit_py() -> Path:
    """The kernel's own KTAP parser, from Debian's source of the lab's 6.1 kernel."""
    tree = images.source_tree(*KUNIT_SOURCE, progress=lambda m: None)
    return tree / "tools" / "testing" / "kunit" / "kunit.py"


def kunit_parse(kunit_py: Path, text: str, tmp_path: Path) -> dict[str, dict[str, str] | str]:
    """{group: {case: status}, test: status} as kunit.py reads ``text``."""
    (tmp_path / "r.ktap").write_text(text)
    argv = [sys.executable, str(kunit_py), "parse", f"--json={tmp_path / 'r.json'}"]
    # Exit 1: some test failed, as in the sample.
    out = subprocess.run([*argv, str(tmp_path / "r.ktap")], capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    tests: dict[str, dict[str, str] | str] = {c["name"]: c["status"] for c in data["test_cases"]}
    for g in data["sub_groups"]:
        tests[g["name"]] = {c["name"]: c["status"] for c in g["test_cases"]}
    return tests


def test_ktap_reads_back_through_the_kernels_own_parser(kunit_py: Path, tmp_path: Path) -> None:
    text = report.ktap(sample())
    assert text.startswith(
        "KTAP version 1\n1..3\n  KTAP version 1\n  # Subtest: debian-6.1/e1000,rtl8139\n"
    )
    stalled = "boot stalled after 'VFS: Dquot-cache hash table entries: 512'"
    assert f"  # boot retried: {stalled}\n" in text
    assert "  ok 1 delivery.e1000_0\n" not in text and "  ok 1 delivery.e1000\n" in text
    assert "  ok 1 delivery.e1000-cb0 # SKIP not on this kernel\n" in text
    assert kunit_parse(kunit_py, text, tmp_path) == {
        "debian-6.1/e1000,rtl8139": {
            "delivery.e1000": "PASS",
            "delivery.rtl8139": "FAIL",
            "unload": "PASS",
        },
        "debian-6.12/e1000-cb0/debug": {"delivery.e1000-cb0": "SKIP"},
        "debian-6.12/e1000": "FAIL",
    }


@pytest.mark.parametrize(
    ("bug", "good", "bad"),
    [
        ("a skip read as a pass", " # SKIP not on this kernel", ""),
        ("a failure read as a pass", "  not ok 2 delivery.rtl8139", "  ok 2 delivery.rtl8139"),
        ("a test left out of its guest", "  ok 3 unload\n", ""),
    ],
)
def test_the_ktap_check_can_fail(
    kunit_py: Path, tmp_path: Path, bug: str, good: str, bad: str
) -> None:
    text = report.ktap(sample())
    assert good in text, bug
    planted = text.replace(good, bad, 1)
    assert kunit_parse(kunit_py, planted, tmp_path) != kunit_parse(kunit_py, text, tmp_path), bug


def test_merging_shards_refuses_a_guest_run_twice() -> None:
    run = sample()
    with pytest.raises(ValueError, match="in more than one"):
        report.merge([run, run])
    assert report.merge(
        [RunResult(run.guests[:1], 10.0), RunResult(run.guests[1:], 20.0)]
    ) == RunResult(sorted(run.guests, key=lambda g: g.request.id), 20.0)


def test_the_matrix_has_each_guest_once_numbered_longest_first() -> None:
    kernels, sets, profiles = ["a", "b-kasan"], ["all", "e1000"], ["default", "debug"]
    whole = plan.guests(kernels, sets, profiles, "tcg", sanitizers={"b-kasan"})
    # A sanitizer kernel boots with the default profile only.
    assert len(whole) == 6 and [r.guest_no for r in whole] == list(range(6))
    assert {r.profile for r in whole if r.kernel == "b-kasan"} == {"default"}
    assert {r.id for r in whole if r.sanitizer} == {"b-kasan/all", "b-kasan/e1000"}
    assert whole[0].kernel == "b-kasan" and whole[-1].profile == "debug"  # longest first


def part(g: GuestResult, shard: str) -> RunResult:
    return RunResult([g], 1.0, shards=[shard], plan="p1")


def test_the_verdict_tells_a_finding_from_the_lab_failing() -> None:
    g1, g2, g3 = sample().guests  # a failure; a skip; a guest that never booted
    assert RunResult([g1, g2, g3], 1.0).verdict is Verdict.FINDING  # a finding wins
    assert RunResult([g2, g3], 1.0).verdict is Verdict.LAB
    assert RunResult([g2], 1.0).verdict is Verdict.PASSED
    errored = replace(g2, cases=[replace(g2.cases[0], outcome=Outcome.ERROR)])
    assert RunResult([errored], 1.0).verdict is Verdict.LAB
    assert RunResult([], 1.0).verdict is Verdict.LAB  # ran nothing
    assert RunResult([], 1.0, shards=["6/6"], plan="p1").verdict is Verdict.PASSED  # empty shard
    assert [v.status for v in Verdict] == [0, 1, 3]
    lines = report.verdict_lines(RunResult([g2, g3], 1.0))
    assert lines[-1] == "verdict: lab could not run: debian-6.12/e1000 (exit 3)"


def test_merging_shards_says_which_is_missing_and_refuses_mixed_plans() -> None:
    g1, g2, _ = sample().guests
    merged = report.merge([part(g1, "1/3"), part(g2, "3/3")])
    assert merged.missing == ["2/3"] and merged.shards == ["1/3", "3/3"]
    assert merged.verdict is Verdict.FINDING  # g1's failure still wins
    assert report.merge([part(g2, "1/2")]).verdict is Verdict.LAB  # 2/2 missing
    assert "missing: shard 2/3 of the plan" in report.printable(merged)
    with pytest.raises(ValueError, match="shard 1/3 is in more than one"):
        report.merge([part(g1, "1/3"), part(g2, "1/3")])
    other = RunResult([g2], 1.0, shards=["2/3"], plan="p2")
    with pytest.raises(ValueError, match="different shard plans"):
        report.merge([part(g1, "1/3"), other])


def test_a_case_every_part_ran_shows_the_worst_of_them() -> None:
    """The leak check runs in each part of a guest: one part's leak fails the cell."""
    req = GuestRequest("k", "e1000")
    ok = CaseResult("nothing_leaked", None, Outcome.PASS, 3.0)
    leak = replace(ok, outcome=Outcome.FAIL, seconds=2.0, message="unreferenced object")
    parts = [
        GuestResult(replace(req, part="1/2"), [ok]),
        GuestResult(replace(req, part="2/2"), [leak]),
    ]
    cell = report.cells(RunResult(parts, 1.0))[("k/e1000", "nothing_leaked")]
    assert cell == report.Cell(Outcome.FAIL, 3.0, "unreferenced object")
    ktap = report.ktap(RunResult(parts, 1.0))
    assert ktap.count("# Subtest: k/e1000") == 1 and ktap.endswith("not ok 1 k/e1000\n")


def test_the_matrix_and_summary_say_which_kernels_were_left_out(tmp_path: Path) -> None:
    left = LeftOut("debian-6.1-kasan", "not built: make sanitizer-kernels")
    run = RunResult(sample().guests[1:2], 1.0, left_out=[left])
    report.write(run, tmp_path)
    assert RunResult.load(tmp_path).left_out == [left]
    assert json.loads((tmp_path / "summary.json").read_text())["left_out"] == [
        {"kernel": "debian-6.1-kasan", "reason": "not built: make sanitizer-kernels"}
    ]
    assert (
        "left out: debian-6.1-kasan (not built: make sanitizer-kernels)"
        in report.printable(run).splitlines()
    )
