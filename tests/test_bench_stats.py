"""The benchmark's arithmetic, from made-up trials and /proc/stat: the whole-guest cost,
medians and ranges over rounds, the baseline, ratios, the targets and their verdicts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lab import LabError
from lab.bench.stats import (
    GOALS,
    TWO_READERS,
    BenchResult,
    Figure,
    Goal,
    Row,
    Spread,
    Trial,
    Verdict,
    busy_seconds,
    judge,
    summarize,
)
from lab.guestside.reports import CpuStat

# Two reads of a 2-CPU guest's /proc/stat, 10 s apart (USER_HZ 100), as 6.1 prints it.
STAT_BEFORE = """\
cpu  1200 5 3400 150000 20 100 900 0 0 0
cpu0 600 2 1700 75000 10 50 450 0 0 0
cpu1 600 3 1700 75000 10 50 450 0 0 0
intr 123456 0 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 987654
btime 1700000000
processes 1234
procs_running 1
procs_blocked 0
softirq 54321 0 100 0 200 300 0 4 500 0 600
"""
STAT_AFTER = """\
cpu  1300 5 3500 151550 30 110 1050 0 0 0
cpu0 650 2 1750 75800 15 55 520 0 0 0
cpu1 650 3 1750 75750 15 55 530 0 0 0
intr 223456 0 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 997654
btime 1700000000
processes 1240
procs_running 2
procs_blocked 0
softirq 64321 0 100 0 200 300 0 4 500 0 600
"""


def test_busy_time_from_a_pair_of_proc_stat_reads() -> None:
    before, after = CpuStat.parse(STAT_BEFORE, 100), CpuStat.parse(STAT_AFTER, 100)
    assert (before.cpus, before.idle, before.iowait, before.softirq) == (2, 150000, 20, 900)
    # 10 s x 2 CPUs, less 1550 ticks idle and 10 of iowait: 20 - 15.6 = 4.4 s busy.
    assert busy_seconds(before, after, 10.0) == pytest.approx(4.4)
    # Steal time is no work of the guest's.
    stolen = replace(after, steal=after.steal + 100)
    assert busy_seconds(before, stolen, 10.0) == pytest.approx(3.4)


def test_proc_stat_is_parsed_or_refused() -> None:
    with pytest.raises(ValueError, match="not /proc/stat"):
        CpuStat.parse("intr 1 2 3\n", 100)
    one = CpuStat.parse("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n", 100)
    assert one.cpus == 1 and one.steal == 8
    with pytest.raises(LabError, match="CPUs online changed"):
        busy_seconds(one, replace(one, cpus=2), 1.0)


FRAMES = 1000


def trial(
    sniffer: str, rnd: int, busy: float, cpu: float = 0.0, load: str = "fixed", *,
    syscalls: int | None = None, wakeups: int | None = None, seen: int = FRAMES,
    rx: int = FRAMES, stack: int | None = None, buf: int | None = None,
    retries: tuple[str, ...] = (),
) -> Trial:  # fmt: skip
    process = sniffer not in ("none", "none-loaded")
    return Trial(
        load=load, sniffer=sniffer, round=rnd, process=process, sent=rx, sent_unit="frames",
        sent_s=0.5, rx=rx, stack=rx if stack is None else stack, seen=seen, missed=0,
        window_s=0.5, busy_s=busy, softirq_s=0.0,
        sniffer_cpu_s=cpu, module_loaded=sniffer != "none", syscalls=syscalls,
        wakeups=wakeups, buf_bytes=buf, retries=retries,
    )  # fmt: skip


def one_round(rnd: int, jitter: float, load: str = "fixed") -> list[Trial]:
    """Every sniffer once: busy and process seconds per 1000 frames (0.001 s: 1 us/frame)."""
    return [
        trial("none", rnd, 0.050 + jitter, load=load),
        trial("none-loaded", rnd, 0.0505 + jitter, load=load),
        trial("afpacket", rnd, 0.090 + jitter, 0.030, load, syscalls=100, wakeups=90,
              buf=1_600_000),
        trial("tcpdump", rnd, 0.070 + jitter, 0.004, load, syscalls=50, wakeups=40),
        trial("pysniff", rnd, 0.080 + jitter, 0.025, load, syscalls=8, wakeups=6,
              buf=FRAMES * 4096),
        trial("ntadump", rnd, 0.060 + jitter, 0.003, load, syscalls=30, wakeups=9),
    ]  # fmt: skip


def rounds_of(load: str = "fixed") -> list[Trial]:
    return [t for rnd, j in enumerate((0.0, 0.002, -0.001)) for t in one_round(rnd, j, load)]


# What a second reader of the device adds, busy seconds per 1000 frames (0.001: 1 us/frame):
# AF_PACKET copies every frame once more, NTA publishes the same chunk once more.
SECOND = {"afpacket": 0.040, "tcpdump": 0.020, "pysniff": 0.005, "ntadump": 0.002}


def two_readers_rounds() -> list[Trial]:
    """rounds_of(TWO_READERS): every sniffer in two copies, each seeing every frame, their
    process time doubled, the guest busier by SECOND."""
    out = []
    for t in rounds_of(TWO_READERS):
        if t.sniffer in SECOND:
            t = replace(t, busy_s=t.busy_s + SECOND[t.sniffer], sniffer_cpu_s=2 * t.sniffer_cpu_s,
                        seen_each=(FRAMES, FRAMES), missed_each=(0, 0))  # fmt: skip
        out.append(t)
    return out


def rows_by_sniffer(rows: list[Row], load: str = "fixed") -> dict[str, Row]:
    return {r.sniffer: r for r in rows if r.load == load}


def test_capture_is_the_guest_busy_time_over_the_none_trials_median() -> None:
    rows = rows_by_sniffer(summarize(rounds_of()))
    afp = rows["afpacket"]
    # busy 90, 92, 89 us/frame; none 50, 52, 49 (median 50): capture 40, 42, 39.
    assert (afp.capture_us.median, afp.capture_us.lo, afp.capture_us.hi) == pytest.approx(
        (40.0, 39.0, 42.0)
    )
    assert afp.busy_us.median == pytest.approx(90.0)
    assert afp.sniffer_us is not None
    assert (afp.sniffer_us.lo, afp.sniffer_us.hi) == pytest.approx((30.0, 30.0))
    assert rows["none"].capture_us.median == pytest.approx(0.0)
    assert rows["none"].sniffer_us is None  # no process
    assert rows["none-loaded"].capture_us.median == pytest.approx(0.5)
    assert afp.syscalls_per_k == Spread(100.0, 100.0, 100.0)
    assert afp.buf_bytes_per_frame == pytest.approx(1600.0)


def test_ratios_are_of_medians_for_both_figures() -> None:
    rows = rows_by_sniffer(summarize(rounds_of()))
    nd, py = rows["ntadump"], rows["pysniff"]
    assert nd.capture_vs_tcpdump == pytest.approx(10 / 20, abs=1e-3)
    assert nd.process_vs_tcpdump == pytest.approx(3 / 4, abs=1e-3)
    assert py.capture_vs_afpacket == pytest.approx(30 / 40, abs=1e-3)
    assert py.process_vs_afpacket == pytest.approx(25 / 30, abs=1e-3)
    assert rows["none-loaded"].capture_vs_tcpdump is None


def test_per_frame_means_per_frame_the_nic_received() -> None:
    """Under GRO a sniffer sees fewer, merged frames: every per-frame figure stays per
    frame received, and buffer bytes are per frame seen."""
    trials = [
        trial("none", 0, 0.050, load="bulk"),
        trial("ntadump", 0, 0.080, 0.010, "bulk", syscalls=20, seen=100, stack=101,
              buf=100 * 4096),
    ]  # fmt: skip
    nd = rows_by_sniffer(summarize(trials), "bulk")["ntadump"]
    assert (nd.seen, nd.stack, nd.rx) == (100, 101, FRAMES)
    assert nd.capture_us.median == pytest.approx(30.0)
    assert nd.sniffer_us is not None and nd.sniffer_us.median == pytest.approx(10.0)
    assert nd.syscalls_per_k is not None and nd.syscalls_per_k.median == pytest.approx(20.0)
    assert nd.buf_bytes_per_frame == 4096


def test_the_baseline_is_per_load() -> None:
    trials = [*rounds_of("fixed"), trial("none", 0, 0.200, load="max"),
              trial("afpacket", 0, 0.250, 0.01, "max")]  # fmt: skip
    rows = summarize(trials)
    assert rows_by_sniffer(rows, "max")["afpacket"].capture_us.median == pytest.approx(50.0)
    assert [r.load for r in rows][-2:] == ["max", "max"]


def targets_of(rows: list[Row], goals: tuple[Goal, ...] = GOALS) -> dict[tuple[str, str], Verdict]:
    return {(t.what, t.load): t.verdict for t in judge(goals, rows)}


def test_targets_are_judged_on_the_rounds_range() -> None:
    rows = summarize(rounds_of())
    got = {(t.what, t.load): t for t in judge(GOALS, rows)}
    nd = got[("ntadump capture/frame vs tcpdump's", "fixed")]
    # 10 (9..12) over 20 (19..22): 0.5, the range 9/22..12/19 straddles 0.5.
    assert nd.measured == 0.5 and (nd.lo, nd.hi) == (round(9 / 22, 3), round(12 / 19, 3))
    assert nd.verdict is Verdict.UNRESOLVED
    assert got[("ntadump process/frame vs tcpdump's", "fixed")].verdict is Verdict.MISSED
    py = got[("pysniff process/frame vs afpacket's", "fixed")]
    assert py.verdict is Verdict.MISSED and py.measured == pytest.approx(0.833, abs=1e-3)
    assert got[("ntadump wakeups per 1000 frames", "fixed")].verdict is Verdict.MET
    assert got[("ntadump syscalls per 1000 frames", "fixed")].verdict is Verdict.MISSED
    assert got[("pysniff syscalls per 1000 frames", "fixed")].verdict is Verdict.MET
    # Goals are judged at the loads run only; one whose sniffer did not run says so.
    assert {load for _, load in got} == {"fixed"}
    without = judge(GOALS, summarize([t for t in rounds_of() if t.sniffer != "ntadump"]))
    nd = next(t for t in without if t.what == "ntadump capture/frame vs tcpdump's")
    assert nd.verdict is Verdict.NOT_MEASURED and "no ntadump" in nd.note


def test_a_ratio_well_under_its_limit_is_met() -> None:
    cheap = [
        replace(t, busy_s=t.busy_s - 0.008) if t.sniffer == "ntadump" else t for t in rounds_of()
    ]
    nd = {(t.what, t.load): t for t in judge(GOALS, summarize(cheap))}
    # ntadump 2 (1..4) over tcpdump 20 (19..22): at most 4/19 = 0.21.
    assert nd[("ntadump capture/frame vs tcpdump's", "fixed")].verdict is Verdict.MET


def test_nta_loaded_is_judged_against_the_spread_of_none() -> None:
    rows = summarize(rounds_of())
    loaded = {(t.what, t.load): t for t in judge(GOALS, rows)}[
        ("NTA loaded, serving nothing, vs none", "fixed")
    ]
    # none-loaded 0.5 us over none; the rounds spread over 3 us: within it.
    assert loaded.verdict is Verdict.MET and loaded.limit == pytest.approx(3.0)
    costly = [replace(t, busy_s=t.busy_s + 0.005) if t.sniffer == "none-loaded" else t
              for t in rounds_of()]  # fmt: skip
    again = {(t.what, t.load): t for t in judge(GOALS, summarize(costly))}
    assert again[("NTA loaded, serving nothing, vs none", "fixed")].verdict is Verdict.MISSED


def test_a_reference_that_costs_nothing_measures_no_ratio() -> None:
    free = [replace(t, busy_s=0.050) if t.sniffer == "tcpdump" else t for t in rounds_of()]
    got = {(t.what, t.load): t for t in judge(GOALS, summarize(free))}
    goal = got[("ntadump capture/frame vs tcpdump's", "fixed")]
    assert goal.verdict is Verdict.NOT_MEASURED and "not above zero" in goal.note


def test_a_per_k_goal_without_counts_is_not_measured() -> None:
    untraced = [replace(t, syscalls=None) for t in rounds_of()]
    goal = Goal("x", Figure.SYSCALLS, "ntadump", 10, loads=("fixed",))
    assert targets_of(summarize(untraced), (goal,)) == {("x", "fixed"): Verdict.NOT_MEASURED}


def test_retries_reach_the_rows_and_the_json() -> None:
    trials = rounds_of()
    trials[5] = replace(trials[5], retries=("ntadump, under the meter was not ready: x",))
    rows = summarize(trials)
    assert rows_by_sniffer(rows)["ntadump"].retries == (
        "ntadump, under the meter was not ready: x",
    )
    result = BenchResult(
        kernel="6.1", accel="tcg", accel_reason="r", host="h", idle_accounting="nohz",
        clocksource="hpet",
        boot_s=1, total_s=2, complete=True, rounds=3, sniffers=["none"], loads={"fixed": "f"},
        sweep={}, unit="u", rows=rows, targets=judge(GOALS, rows), trials=trials,
    )  # fmt: skip
    data = json.loads(result.to_json())
    row = data["rows"][0]
    assert {"capture_us", "sniffer_us"} <= row.keys() and row["sniffer"] == "none"
    assert row["capture_us"]["median"] == pytest.approx(0.0) and row["sniffer_us"] is None
    assert data["targets"][0]["verdict"] == "unresolved"
    assert data["trials"][5]["retries"] == ["ntadump, under the meter was not ready: x"]


def test_two_ntadumps_are_judged_against_two_tcpdumps() -> None:
    """The two-readers load: its own none baseline, ratios between the doubled sniffers,
    and the ntadump-vs-tcpdump targets judged there too."""
    rows = summarize([*rounds_of(), *two_readers_rounds()])
    two = rows_by_sniffer(rows, TWO_READERS)
    assert list(two) == ["none", "none-loaded", "afpacket", "tcpdump", "pysniff", "ntadump"]
    nd, td = two["ntadump"], two["tcpdump"]
    # busy 62, 64, 61 and 90, 92, 89 us/frame over none's 50 (its median at this load).
    assert (nd.capture_us.median, nd.capture_us.lo, nd.capture_us.hi) == pytest.approx(
        (12.0, 11.0, 14.0)
    )
    assert (td.capture_us.median, td.capture_us.lo, td.capture_us.hi) == pytest.approx(
        (40.0, 39.0, 42.0)
    )
    assert nd.sniffer_us == Spread(6.0, 6.0, 6.0)  # both copies' process time
    assert nd.capture_vs_tcpdump == 0.3 and nd.process_vs_tcpdump == 0.75
    assert two["pysniff"].capture_vs_afpacket == pytest.approx(35 / 80, abs=1e-3)
    got = {(t.what, t.load): t for t in judge(GOALS, rows)}
    capture = got[("ntadump capture/frame vs tcpdump's", TWO_READERS)]
    assert (capture.measured, capture.lo, capture.hi) == (0.3, round(11 / 42, 3), round(14 / 39, 3))
    assert capture.verdict is Verdict.MET
    assert got[("ntadump process/frame vs tcpdump's", TWO_READERS)].verdict is Verdict.MISSED
    assert got[("pysniff capture/frame vs afpacket's", TWO_READERS)].verdict is Verdict.MET
    # The per-1000-frames goals are the fixed load's only.
    assert ("ntadump syscalls per 1000 frames", TWO_READERS) not in got


def test_two_readers_in_bench_json() -> None:
    trials = [*rounds_of(), *two_readers_rounds()]
    rows = summarize(trials)
    result = BenchResult(
        kernel="6.1", accel="tcg", accel_reason="r", host="h", idle_accounting="nohz",
        clocksource="hpet",
        boot_s=1, total_s=2, complete=True, rounds=3, sniffers=["none"],
        loads={"fixed": "f", TWO_READERS: "f, 2 copies"}, sweep={}, unit="u", rows=rows,
        targets=judge(GOALS, rows), trials=trials,
    )  # fmt: skip
    data = json.loads(result.to_json())
    mine = {r["sniffer"]: r for r in data["rows"] if r["load"] == TWO_READERS}
    assert list(mine) == ["none", "none-loaded", "afpacket", "tcpdump", "pysniff", "ntadump"]
    assert mine["ntadump"]["capture_vs_tcpdump"] == 0.3
    assert mine["ntadump"]["capture_us"]["median"] == pytest.approx(12.0)
    nd = [t for t in data["trials"] if (t["load"], t["sniffer"]) == (TWO_READERS, "ntadump")]
    assert [(t["seen_each"], t["missed_each"]) for t in nd] == [([1000, 1000], [0, 0])] * 3
    judged = {(t["what"], t["load"]): t["verdict"] for t in data["targets"]}
    assert judged[("ntadump capture/frame vs tcpdump's", TWO_READERS)] == "met"
