"""The bench's report for people, from made-up trials: the table, the spreads, the
frame-size sweep and where NTA crosses AF_PACKET, the targets, the plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lab.bench import render
from lab.bench.stats import GOALS, UNIT, BenchResult, Trial, judge, summarize
from tests.test_bench_stats import one_round, rounds_of, two_readers_rounds


def result(trials: list[Trial], sweep: dict[str, int] | None = None) -> BenchResult:
    rows = summarize(trials)
    return BenchResult(
        kernel="6.1.0-56-amd64", accel="tcg", accel_reason="test", host="cpu",
        idle_accounting="nohz: idle periods measured", clocksource="hpet", boot_s=20,
        total_s=900, complete=True,
        rounds=3, sniffers=["none", "ntadump"], loads={}, sweep=sweep or {}, unit=UNIT,
        rows=rows, targets=judge(GOALS, rows), trials=trials,
    )  # fmt: skip


def test_table_has_every_column_and_both_figures_with_their_range() -> None:
    text = render.report_text(result(rounds_of()))
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("load"))
    for name, _ in render.COLUMNS:
        assert name in lines[head]
    body = {line.split()[1]: line.split() for line in lines[head + 2 : head + 8]}
    assert list(body) == ["none", "none-loaded", "afpacket", "tcpdump", "pysniff", "ntadump"]
    afp = body["afpacket"]
    assert afp[:7] == ["fixed", "afpacket", "2000", "1000", "1000", "1000", "0"]
    assert afp[7:11] == ["40.0", "(39.0..42.0)", "30.0", "(30.0..30.0)"]  # capture, process
    assert afp[-3:] == ["2.00x", "1.00x", "0.00"]  # capture vs tcpdump, vs afpacket; host
    assert body["none"][9] == "-"  # no process
    assert text.startswith(f"per frame: {UNIT}")


def test_spreads_retries_contention_and_targets_are_stated() -> None:
    trials = rounds_of()
    trials[5] = replace(trials[5], retries=("ntadump, under the meter was not ready: gone",))
    trials = [replace(t, host_others=0.9) if t.sniffer == "pysniff" else t for t in trials]
    text = render.report_text(result(trials))
    assert "over 0.25 CPUs in the median window:\n  fixed pysniff: 0.90\n" in text
    assert "spread over 3 rounds (capture us/frame, max - min):" in text
    assert "  fixed      widest capture range 3.00 us (none)" in text
    assert "infrastructure retries (set-up failed once, then passed):" in text
    assert "  fixed ntadump: ntadump, under the meter was not ready: gone" in text
    lines = text.splitlines()
    at = lines.index("targets (reported, not asserted; judged on the rounds' range):")
    goals = lines[at + 1 :]
    nd = next(g for g in goals if "ntadump capture/frame vs tcpdump's" in g and "fixed" in g)
    assert nd.split()[-6:] == ["unresolved:", "the", "rounds", "straddle", "the", "limit"]
    assert "0.50x (0.41..0.63)" in nd.replace("  ", " ")
    assert any("ntadump syscalls per 1000 frames" in g and "missed by 20.0/1k" in g for g in goals)
    loaded = next(g for g in goals if g.lstrip().startswith("NTA loaded"))
    assert "0.50us (-0.50..2.50)" in loaded and "|x| <= 3.00us  met" in loaded


def test_a_two_sided_target_missed_says_by_how_much_either_way() -> None:
    cheaper = [replace(t, busy_s=t.busy_s - 0.005) if t.sniffer == "none-loaded" else t
               for t in rounds_of()]  # fmt: skip
    lines = render.report_text(result(cheaper)).splitlines()
    loaded = next(g for g in lines if g.lstrip().startswith("NTA loaded"))
    assert "-4.50us" in loaded and loaded.endswith("missed by 1.50us (limit: the rounds' spread)")


def sweep_trials() -> list[Trial]:
    """ntadump dearer than tcpdump at 64 B, cheaper from 512 B."""
    out = []
    for load, nd in (("fixed-64", 0.080), ("fixed-512", 0.065), ("fixed-1514", 0.058)):
        for t in one_round(0, 0.0, load):
            out.append(replace(t, busy_s=nd) if t.sniffer == "ntadump" else t)
    return out


def test_the_sweep_says_where_nta_crosses_af_packet() -> None:
    sweep = {"fixed-64": 64, "fixed-512": 512, "fixed-1514": 1514}
    lines = render.sweep(result(sweep_trials(), sweep))
    assert lines[0].split() == ["sniffer", "64", "B", "512", "B", "1514", "B"]
    assert lines[-2] == (
        "  ntadump/tcpdump: 64 B 1.50x, 512 B 0.75x, 1514 B 0.40x: below tcpdump from 512 B"
    )
    assert lines[-1].endswith("pysniff/afpacket: 64 B 0.75x, 512 B 0.75x, 1514 B 0.75x: "
                              "below afpacket from 64 B")  # fmt: skip
    assert render.sweep(result(rounds_of())) == []


def test_the_filtered_load_against_each_sniffers_unfiltered_cost() -> None:
    thinned = [replace(t, busy_s=0.052) if t.sniffer == "ntadump" else t
               for t in rounds_of("filtered")]  # fmt: skip
    text = render.report_text(result([*rounds_of(), *thinned]))
    lines = text.splitlines()
    at = lines.index("a filter keeping 1 frame in 10, capture us/frame against the fixed load's:")
    # ntadump: 2 us/frame filtered (52 - 50), 10 unfiltered; the others as unfiltered.
    assert lines[at + 1 : at + 5] == [
        "  afpacket        40.0 against 40.0 unfiltered: 1.00x",
        "  tcpdump         20.0 against 20.0 unfiltered: 1.00x",
        "  pysniff         30.0 against 30.0 unfiltered: 1.00x",
        "  ntadump         2.00 against 10.00 unfiltered: 0.20x",
    ]
    # Judged against tcpdump at the filtered load too.
    filtered = [g for g in target_lines(text) if "vs tcpdump's" in g and " filtered " in g]
    assert len(filtered) == 2 and "0.10x" in filtered[0], filtered
    assert render.filtered(result(rounds_of())) == []  # no filtered load, no section


def test_two_readers_against_one_and_nta_against_af_packet_both_doubled() -> None:
    text = render.report_text(result([*rounds_of(), *two_readers_rounds()]))
    lines = text.splitlines()
    at = lines.index(
        "2 readers on one device (2 copies of each sniffer), capture us/frame against one "
        "(the fixed load's):"
    )
    assert lines[at + 1 : at + 8] == [
        "  afpacket        80.0 against 40.0 with one: 2.00x; the second reader +40.0 us/frame",
        "  tcpdump         40.0 against 20.0 with one: 2.00x; the second reader +20.0 us/frame",
        "  pysniff         35.0 against 30.0 with one: 1.17x; the second reader +5.00 us/frame",
        "  ntadump         12.0 against 10.00 with one: 1.20x; the second reader +2.00 us/frame",
        "  ntadump x2 against tcpdump x2: 0.30x (alone: 0.50x)",
        "  pysniff x2 against afpacket x2: 0.44x (alone: 0.75x)",
        "",
    ]
    # Its rows in the table, every column where the head says (the load's name is longer
    # than the others'), and judged against tcpdump at this load too.
    assert [line.split()[:2] for line in lines if line.startswith("two-readers")] == [
        ["two-readers", s] for s in ("none", "none-loaded", "afpacket", "tcpdump", "pysniff",
                                     "ntadump")
    ]  # fmt: skip
    head = next(line for line in lines if line.startswith("load"))
    rate = head.index("rx/s")  # right-aligned: every row's 2000 ends where it does
    rows = [line for line in lines if line.startswith(("fixed ", "two-readers "))]
    assert len(rows) == 12 and {r[rate : rate + 4] for r in rows} == {"2000"}, rows
    assert head.index("sniffer") == rows[-1].index("ntadump") == len("two-readers") + 1
    assert "\n  fixed       widest capture range 3.00 us (none);" in text
    assert "\n  two-readers widest capture range 3.00 us (none);" in text
    doubled = [g for g in target_lines(text) if "vs tcpdump's" in g and " two-readers " in g]
    assert len(doubled) == 2 and "0.30x (0.26..0.36)" in doubled[0], doubled
    assert doubled[0].endswith("met") and doubled[1].endswith("missed by 0.25x")
    # Without the fixed load: the doubled pairs alone; without the load, no section.
    assert render.two_readers(result(two_readers_rounds())) == [
        "  ntadump x2 against tcpdump x2: 0.30x",
        "  pysniff x2 against afpacket x2: 0.44x",
    ]
    assert render.two_readers(result(rounds_of())) == []


def test_plot_is_written(tmp_path: Path) -> None:
    sweep = {"fixed-64": 64, "fixed-512": 512, "fixed-1514": 1514}
    render.plot(result([*rounds_of(), *sweep_trials()], sweep), tmp_path / "bench.png", "t")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def target_lines(text: str) -> list[str]:
    lines = text.splitlines()
    at = lines.index("targets (reported, not asserted; judged on the rounds' range):")
    return lines[at + 1 :]


def test_a_subset_of_loads_has_each_target_once_and_at_its_loads_only() -> None:
    """``--loads fixed,max``: a target line for each goal at each of those loads it is set
    for, once; none for a load the run did not have (web, bulk)."""
    trials = [*rounds_of(), *rounds_of("max")]
    lines = target_lines(render.report_text(result(trials)))
    keys = [(g.what, load) for g in GOALS for load in ("fixed", "max")
            if g.loads is None or load in g.loads]  # fmt: skip
    assert len(lines) == len(keys) == 14
    for (what, load), line in zip(keys, lines, strict=True):
        assert line.split(what, 1)[1].split()[0] == load, line
    assert not [line for line in lines if "web" in line or "bulk" in line]


def test_one_round_does_not_judge_a_target_on_the_rounds_spread() -> None:
    """One round has no spread: NTA loaded against none is not judged, at every load."""
    one = [t for t in [*rounds_of(), *rounds_of("max")] if t.round == 0]
    lines = target_lines(render.report_text(replace(result(one), rounds=1)))
    loaded = [line for line in lines if line.lstrip().startswith("NTA loaded")]
    assert len(loaded) == 2
    for line in loaded:
        assert line.endswith("  not judged (one round)"), line
        assert "0.50us (0.50..0.50)" in line and "|x| <=" not in line
