"""docs/measurements.md is written from results: a small made-up summary.json and bench.json
in, exactly these tables out; bad input refused with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.measurements import benchmark, document, load_bench, num, rerun, scenarios
from lab.records import (
    BootAttempt,
    BootOutcome,
    CaseResult,
    GuestInfo,
    GuestRequest,
    GuestResult,
    Outcome,
    RunResult,
    Verdict,
)

ROOT = Path(__file__).resolve().parents[1]


def made_up_run() -> RunResult:
    req = GuestRequest(kernel="debian-6.1", nic_set="e1000,rtl8139")
    info = GuestInfo(
        name="ntalab-0", kernel="debian-6.1", release="6.1.0-56-amd64",
        nics=["e1000", "rtl8139"], accel="tcg", accel_reason="no KVM", append=[], boot_s=24.4,
        attempts=[BootAttempt(BootOutcome.STALL, 61.0, "VFS: Dquot", 60.0, "console-stalled-1.log"),
                  BootAttempt(BootOutcome.OK, 24.4, "", 3.0, "console.log")],
    )  # fmt: skip
    cases = [
        CaseResult("smoke", "e1000", Outcome.PASS, 12.3, figures={"e1000": "1000/1000"}),
        CaseResult("smoke", "rtl8139", Outcome.FAIL, 40.0, "rtl8139: frame bytes differ"),
        CaseResult("unload", None, Outcome.PASS, 75.0, figures={"e1000": "reload ok"},
                   restored="restored after test_smoke[rtl8139]: eth1 down"),
    ]  # fmt: skip
    return RunResult([GuestResult(req, cases, info, seconds=150.0)], 181.0)


def test_the_scenario_section_says_what_the_summary_says() -> None:
    text = "\n".join(scenarios(made_up_run(), ["results/2026-12-06T10-00-00"]))
    assert text == "\n".join([
        "## Scenarios",
        "",
        "From `results/2026-12-06T10-00-00` (`ntalab run`): verdict **finding**, 3 tests on 1 "
        "guests, 3 min 01 s in all.",
        "",
        "| guest | kernel | accelerator | boot | tests | time | boot retried |",
        "|---|---|---|---|---|---|---|",
        "| debian-6.1/e1000,rtl8139 | 6.1.0-56-amd64 | tcg (no KVM) | 24 s | 3 | 2 min 30 s | "
        "boot stalled after 'VFS: Dquot' |",
        "",
        "### Matrix",
        "",
        "Outcome of each scenario on each kernel/NIC, and its longest",
        "time. 1: `debian-6.1/e1000`; 2: `debian-6.1/rtl8139`.",
        "",
        "| scenario | longest | 1 | 2 |",
        "|---|---|---|---|",
        "| `smoke` | 40 s | ok | FAIL |",
        "| `unload` | 1 min 15 s | ok | ok |",
        "",
        "### Figures",
        "",
        "- `smoke`",
        "  - debian-6.1/e1000: 1000/1000",
        "- `unload`",
        "  - debian-6.1/e1000: reload ok",
        "",
        "### Failures",
        "",
        "- `smoke` on debian-6.1/rtl8139: FAIL: rtl8139: frame bytes differ",
        "",
        "### Guest state put back before a test",
        "",
        "- `unload` on debian-6.1/e1000: restored after test_smoke[rtl8139]: eth1 down",
        "- `unload` on debian-6.1/rtl8139: restored after test_smoke[rtl8139]: eth1 down",
        "",
        "Verdict: finding (1 findings).",
    ])  # fmt: skip


# main's bench.json (lab.bench.stats.BenchResult.to_json), cut down: two loads, two sniffers.
BENCH = {
    "kernel": "6.1.0-56-amd64", "accel": "tcg", "accel_reason": "no KVM", "host": "AMD EPYC",
    "idle_accounting": "nohz: idle periods measured", "boot_s": 9.9, "total_s": 591.4,
    "complete": True, "rounds": 2, "sniffers": ["tcpdump", "ntadump"],
    "loads": {"fixed": "UDP frames at 2000/s", "fixed-64": "UDP frames of 64 B at 2000/s"},
    "sweep": {"fixed-64": 64}, "unit": "per frame the NIC received",
    "rows": [
        {"load": "fixed", "sniffer": "tcpdump", "rx": 20000.0,
         "capture_us": {"median": 4.947, "lo": 4.6355, "hi": 5.2585}, "syscalls_per_k": None,
         "retries": []},
        {"load": "fixed", "sniffer": "ntadump", "rx": 20000.0,
         "capture_us": {"median": 3.14, "lo": 1.95, "hi": 4.34}, "syscalls_per_k": {
             "median": 8.38, "lo": 8.35, "hi": 8.4}, "retries": ["eth0: no carrier"]},
        {"load": "fixed-64", "sniffer": "ntadump", "rx": 10000,
         "capture_us": {"median": 16.9, "lo": 9.71, "hi": 29.6}, "syscalls_per_k": None,
         "retries": []},
    ],
    "targets": [
        {"what": "ntadump capture/frame vs tcpdump's", "load": "fixed", "limit": 0.5,
         "unit": "x", "measured": 0.635, "lo": 0.371, "hi": 0.936, "verdict": "unresolved",
         "note": "", "two_sided": False},
        {"what": "NTA loaded, serving nothing, vs none", "load": "fixed", "limit": 14.7,
         "unit": "us", "measured": -2.91, "lo": -4.03, "hi": 3.32, "verdict": "met",
         "note": "limit: the rounds' spread", "two_sided": True},
    ],
    "trials": [{"load": "fixed", "sniffer": "tcpdump", "round": 1}] * 6,
}  # fmt: skip


def test_the_benchmark_section_is_every_field_of_every_row_per_load() -> None:
    assert benchmark(BENCH, "docs/bench.json") == [
        "## Benchmark",
        "",
        "From `docs/bench.json` (`ntalab bench`): kernel 6.1.0-56-amd64, tcg (no KVM), host "
        "AMD EPYC, 2 rounds, 6 trials, boot 10 s, 9 min 51 s in all, complete. Idle time: "
        "nohz: idle periods measured. Each figure is the median over the rounds, with their "
        "range in brackets.",
        "",
        "Per frame: per frame the NIC received.",
        "",
        "### Load `fixed`",
        "",
        "UDP frames at 2000/s.",
        "",
        "| figure | tcpdump | ntadump |",
        "|---|---|---|",
        "| rx | 20000 | 20000 |",
        "| capture_us | 4.95 (4.64..5.26) | 3.14 (1.95..4.34) |",
        "| syscalls_per_k | - | 8.38 (8.35..8.4) |",
        "| retries | - | eth0: no carrier |",
        "",
        "### Load `fixed-64`",
        "",
        "UDP frames of 64 B at 2000/s.",
        "",
        "| figure | ntadump |",
        "|---|---|",
        "| rx | 10000 |",
        "| capture_us | 16.9 (9.71..29.6) |",
        "| syscalls_per_k | - |",
        "| retries | - |",
        "",
        "### Frame-size sweep",
        "",
        "capture_us by frame size (the loads `fixed-64`).",
        "",
        "| sniffer | 64 B |",
        "|---|---|",
        "| ntadump | 16.9 (9.71..29.6) |",
        "",
        "### Targets (reported, not asserted)",
        "",
        "| target | load | measured | limit | verdict | note |",
        "|---|---|---|---|---|---|",
        "| ntadump capture/frame vs tcpdump's | fixed | 0.635x (0.371..0.936) | <= 0.5x | "
        "unresolved | - |",
        "| NTA loaded, serving nothing, vs none | fixed | -2.91us (-4.03..3.32) | \\|x\\| <= "
        "14.7us | met | limit: the rounds' spread |",
    ]  # fmt: skip


def test_the_real_bench_json_is_read_whole() -> None:
    """docs/bench.json, as main's ``ntalab bench`` wrote it: a table per load, the sweep, a
    line per target, each target's limit as the verdict was judged on it."""
    bench = load_bench(ROOT / "docs" / "bench.json")
    text = benchmark(bench, "docs/bench.json")
    assert [line for line in text if line.startswith("### Load")] == [
        f"### Load `{load}`" for load in bench["loads"]
    ]
    assert "### Frame-size sweep" in text
    targets = text[text.index("### Targets (reported, not asserted)") + 4 :]
    assert len(targets) == len(bench["targets"])
    two_sided = [t for t in bench["targets"] if t["two_sided"]]
    assert two_sided and len([t for t in targets if "\\|x\\| <=" in t]) == len(two_sided)


def test_a_re_run_replaces_its_cases_and_is_listed() -> None:
    req = GuestRequest(kernel="debian-6.1", nic_set="e1000,rtl8139")
    again = RunResult([GuestResult(req, [CaseResult("smoke", "rtl8139", Outcome.PASS, 20.0)])],
                      25.0)  # fmt: skip
    run, reruns = rerun(made_up_run(), [("results/fix", again)])
    assert run.verdict is Verdict.PASSED
    assert [c.outcome for c in run.guests[0].cases] == [Outcome.PASS] * 3
    text = scenarios(run, ["results/r"], reruns)
    assert text[2] == (
        "From `results/r` (`ntalab run`): verdict **passed**, 3 tests (1 of them as re-run in "
        "`results/fix`: below) on 1 guests, 3 min 01 s in all."
    )
    assert "### Failures" not in text
    assert text[text.index("### Re-run") :] == [
        "### Re-run",
        "",
        "Tests run again after the run above; the tables show the re-run.",
        "",
        "- `smoke.rtl8139` on debian-6.1/e1000,rtl8139: FAIL (rtl8139: frame bytes differ); "
        "in `results/fix` ok in 20 s",
    ]  # fmt: skip


def test_a_re_run_of_what_the_run_does_not_hold_is_refused() -> None:
    other = GuestRequest(kernel="debian-6.12", nic_set="e1000,rtl8139")
    req = GuestRequest(kernel="debian-6.1", nic_set="e1000,rtl8139")
    for guest, why in ((GuestResult(other, []), "guest debian-6.12/e1000,rtl8139 is not"),
                       (GuestResult(req, [CaseResult("smoke", "e1000-cb0", Outcome.PASS, 1.0)]),
                        "smoke.e1000-cb0 is not")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            rerun(made_up_run(), [("fix", RunResult([guest], 1.0))])


def test_a_bench_json_of_another_shape_is_refused(tmp_path: Path) -> None:
    older = {**BENCH, "loads": [{"name": "fixed", "frames": 20000}]}  # before lab/bench/
    for data, why in ((older, "no loads"), ({**BENCH, "rows": [{"load": "fixed"}]}, "a row"),
                      ([], "not an object")):  # fmt: skip
        path = tmp_path / "bench.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=why):
            load_bench(path)


def test_figures_keep_what_their_size_warrants() -> None:
    assert [num(x) for x in (20000.0, 591.4, 40.19, 3.447, 0.0863, 0.0, 4.4e-16, -1.0)] == [
        "20000", "591", "40.2", "3.45", "0.0863", "0", "0", "-1",
    ]  # fmt: skip


def test_the_document_holds_both_parts_under_the_command_that_wrote_it() -> None:
    text = document(made_up_run(), ["r"], BENCH, "b.json", "ntalab measurements r --bench b")
    assert text.startswith("# Measurements\n\nWritten from the results named below by\n\n"
                           "    ntalab measurements r --bench b\n")  # fmt: skip
    assert text.index("## Scenarios") < text.index("## Benchmark")


def stdlib_only(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-S", "-m", "lab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_command_writes_it_with_the_standard_library_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    made_up_run().save(run)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    out = tmp_path / "measurements.md"
    proc = stdlib_only("measurements", str(run), "--bench", str(bench), "-o", str(out),
                       cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = document(made_up_run(), [str(run)], BENCH, str(bench),
                        f"ntalab measurements {run} --bench {bench}")  # fmt: skip
    assert out.read_text() == expected


def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "measurements.md"
    out.write_text("kept\n")
    bad = tmp_path / "bench.json"
    bad.write_text('{"kernel": "x"}')
    for args in ([], ["--bench", str(bad)], [str(tmp_path)]):
        proc = stdlib_only("measurements", *args, "-o", str(out), cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("ntalab: error: "), proc.stderr
    assert out.read_text() == "kept\n"


def test_the_command_lists_a_re_run_and_refuses_one_of_nothing(tmp_path: Path) -> None:
    run, fix = tmp_path / "run", tmp_path / "fix"
    req = GuestRequest(kernel="debian-6.1", nic_set="e1000,rtl8139")
    again = RunResult([GuestResult(req, [CaseResult("smoke", "rtl8139", Outcome.PASS, 20.0)])],
                      25.0)  # fmt: skip
    for d, r in ((run, made_up_run()), (fix, again)):
        d.mkdir()
        r.save(d)
    out = tmp_path / "measurements.md"
    proc = stdlib_only("measurements", str(run), "--rerun", str(fix), "-o", str(out),
                       cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    merged, reruns = rerun(made_up_run(), [(str(fix), again)])
    command = f"ntalab measurements {run} --rerun {fix}"
    assert out.read_text() == document(merged, [str(run)], None, "", command, reruns)
    proc = stdlib_only("measurements", str(fix), "--rerun", str(run), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "is not in the results it re-runs" in proc.stderr, proc.stderr
