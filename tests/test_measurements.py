"""docs/measurements.md is written from results: a small made-up summary.json and bench.json
in, exactly these tables out; bad input refused with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.measurements import benchmark, document, num, scenarios
from lab.records import (
    BootAttempt,
    BootOutcome,
    CaseResult,
    GuestInfo,
    GuestRequest,
    GuestResult,
    Outcome,
    RunResult,
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


BENCH = {
    "kernel": "6.1.0-56-amd64", "accel": "tcg", "accel_reason": "no KVM", "host": "AMD EPYC",
    "rounds": 2, "total_s": 591.4, "complete": True, "unit": "per frame the NIC received",
    "loads": {"fixed": "UDP frames at 2000/s"},
    "rows": [
        {"load": "fixed", "sniffer": "tcpdump", "rx": 20000.0,
         "capture_us": {"median": 4.947, "lo": 4.6355, "hi": 5.2585}, "syscalls_per_k": None},
        {"load": "fixed", "sniffer": "ntadump", "rx": 20000.0,
         "capture_us": {"median": 3.14, "lo": 1.95, "hi": 4.34}, "syscalls_per_k": {
             "median": 8.38, "lo": 8.35, "hi": 8.4}},
    ],
    "targets": [
        {"what": "ntadump capture/frame vs tcpdump's", "load": "fixed", "limit": 0.5,
         "unit": "x", "measured": 0.635, "lo": 0.371, "hi": 0.936, "verdict": "unresolved",
         "note": ""},
    ],
}  # fmt: skip


def test_the_benchmark_section_is_every_field_of_every_row_per_load() -> None:
    assert benchmark(BENCH, "docs/bench.json") == [
        "## Benchmark",
        "",
        "From `docs/bench.json` (`ntalab bench`): kernel 6.1.0-56-amd64, tcg (no KVM), host "
        "AMD EPYC, 2 rounds, 9 min 51 s, complete. Each figure is the median over the rounds, "
        "with their range in brackets.",
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
        "",
        "### Targets (reported, not asserted)",
        "",
        "| target | load | measured | limit | verdict | note |",
        "|---|---|---|---|---|---|",
        "| ntadump capture/frame vs tcpdump's | fixed | 0.635x (0.371..0.936) | <= 0.5x | "
        "unresolved | - |",
    ]  # fmt: skip


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
