"""The benchmark's arithmetic and report, from made-up trials: medians, spreads, the
baseline, ratios, targets; and what it reads from each sniffer's output."""

from __future__ import annotations

import json
from dataclasses import asdict, astuple
from pathlib import Path

import pytest

from lab import UsageError
from lab.bench import (
    COLUMNS,
    SNIFFERS,
    Row,
    Spread,
    Target,
    Trial,
    parse_sniffers,
    plot,
    progress_head,
    progress_tail,
    report_text,
    sniffer_figures,
    sniffer_request,
    summarize,
    table,
    targets,
)
from lab.cli import main
from lab.guestside.protocol import Meter
from lab.guestside.reports import AfpacketReport, MeterReport
from pysniff.abi import ReaderStats, Stats
from pysniff.report import SniffReport

FRAMES = 1000


def trial(
    sniffer: str,
    rnd: int,
    cpu: float,
    softirq: float,
    load: str = "fixed",
    syscalls: int | None = None,
    wakeups: int | None = None,
    buf: int | None = None,
    own: tuple[int, int] | None = None,
    delivered: int = FRAMES,
    ticks: tuple[int, int] = (0, 0),
) -> Trial:
    return Trial(
        load=load, sniffer=sniffer, round=rnd, injected=FRAMES, inject_rate=2000, rx=FRAMES,
        delivered=delivered, sniffer_cpu_s=cpu, softirq_s=softirq, busy_s=cpu + softirq,
        syscalls=syscalls, wakeups=wakeups, buf_bytes=buf,
        own_syscalls=own[0] if own else None, own_wakeups=own[1] if own else None,
        module_loaded=sniffer != "none", user_ticks=ticks[0], system_ticks=ticks[1],
    )  # fmt: skip


def one_round(rnd: int, jitter: float, load: str) -> list[Trial]:
    """Every sniffer once, with its own costs (seconds per 1000 frames: 0.001 s is 1 us
    per frame) and counts."""
    return [
        trial("none", rnd, 0.0, 0.010 + jitter, load),
        trial("none-loaded", rnd, 0.0, 0.011 + jitter, load),
        trial("afpacket", rnd, 0.040 + jitter, 0.020, load, 100, 100, 1_600_000, ticks=(30, 10)),
        trial("tcpdump", rnd, 0.010 + jitter, 0.018, load, 50, 40),
        trial("pysniff", rnd, 0.025 + jitter, 0.016, load, 8, 6, FRAMES * 4096, (7, 5)),
        trial("ntadump", rnd, 0.004 + jitter, 0.012, load, 30, 9, FRAMES * 4096, (29, 8)),
    ]


def rounds_of(load: str = "fixed") -> list[Trial]:
    """Three rounds, A B A B."""
    return [t for rnd, j in enumerate((0.0, 0.002, -0.001)) for t in one_round(rnd, j, load)]


def by_sniffer(rows: list[Row], load: str = "fixed") -> dict[str, Row]:
    return {r.sniffer: r for r in rows if r.load == load}


def test_medians_and_spreads_per_frame() -> None:
    rows = by_sniffer(summarize(rounds_of()))
    afp = rows["afpacket"]
    assert afp.rounds == 3
    # 0.040, 0.042, 0.039 s over 1000 frames: 40, 42, 39 us per frame.
    assert astuple(afp.sniffer_us) == pytest.approx((40.0, 39.0, 42.0))
    assert afp.softirq_us.median == pytest.approx(20.0)
    # Less the none rows' median softirq per frame (10, 12, 9 -> 10).
    assert afp.total_us.median == pytest.approx(40.0 + 20.0 - 10.0)
    assert afp.total_us.lo == pytest.approx(39.0 + 20.0 - 10.0)
    assert afp.syscalls_per_k == Spread(100.0, 100.0, 100.0)
    assert afp.buf_bytes_per_frame == pytest.approx(1600.0)
    assert rows["pysniff"].buf_bytes_per_frame == 4096
    assert rows["pysniff"].own_syscalls_per_k == 7 and rows["pysniff"].own_wakeups_per_k == 5
    assert rows["tcpdump"].buf_bytes_per_frame is None  # not measured
    assert afp.delivered == FRAMES and afp.drops == 0


def test_none_rows_show_what_nta_costs_a_device_it_does_not_serve() -> None:
    rows = by_sniffer(summarize(rounds_of()))
    bare, loaded = rows["none"], rows["none-loaded"]
    assert bare.total_us.median == pytest.approx(0.0)  # the baseline, less itself
    assert loaded.total_us.median == pytest.approx(1.0)  # 11 - 10 us per frame
    assert bare.sniffer_us.median == 0 and bare.syscalls_per_k is None
    assert bare.vs_tcpdump is None and loaded.vs_afpacket is None
    text = report_text(summarize(rounds_of()), [])
    assert "NTA loaded, not serving the device" in text
    assert "fixed: softirq 10.0 us/frame without NTA, 11.0 with it loaded" in text


def test_ratios_are_of_sniffer_cpu_medians() -> None:
    rows = by_sniffer(summarize(rounds_of()))
    assert rows["tcpdump"].vs_tcpdump == 1.0 and rows["afpacket"].vs_afpacket == 1.0
    assert rows["pysniff"].vs_afpacket == round(25.0 / 40.0, 3)
    assert rows["ntadump"].vs_tcpdump == round(4.0 / 10.0, 3)
    only = by_sniffer(summarize([t for t in rounds_of() if t.sniffer != "tcpdump"]))
    assert only["ntadump"].vs_tcpdump is None


def test_the_baseline_is_per_load_and_zero_without_none() -> None:
    trials = [
        *rounds_of("fixed"),
        trial("none", 0, 0.0, 0.030, "max"),
        trial("afpacket", 0, 0.010, 0.050, "max"),
        trial("afpacket", 0, 0.010, 0.050, "web"),
    ]
    rows = summarize(trials)
    assert by_sniffer(rows, "max")["afpacket"].total_us.median == pytest.approx(10 + 50 - 30)
    assert by_sniffer(rows, "web")["afpacket"].total_us.median == pytest.approx(60)
    assert [r.load for r in rows][-3:] == ["max", "max", "web"]


def test_web_trials_are_per_frame_before_the_median() -> None:
    # Different frame counts per round: per-frame figures first, medians after.
    trials = [
        trial("afpacket", 0, 0.010, 0.0, "web", delivered=1000),
        trial("afpacket", 1, 0.040, 0.0, "web", delivered=2000),
        trial("afpacket", 2, 0.090, 0.0, "web", delivered=3000),
    ]
    row = summarize(trials)[0]
    assert astuple(row.sniffer_us) == pytest.approx((20.0, 10.0, 30.0))


def goals_of(rows: list[Row]) -> dict[tuple[str, str], Target]:
    return {(g.what, g.load): g for g in targets(rows)}


def test_targets_met_and_missed() -> None:
    trials = [t for ld in ("fixed", "max", "web") for t in rounds_of(ld)]
    goals = goals_of(summarize(trials))
    ntadump = goals[("ntadump CPU/frame vs tcpdump's", "fixed")]
    assert ntadump.measured == 0.4 and ntadump.met and ntadump.verdict() == "met"
    pysniff = goals[("pysniff CPU/frame vs afpacket's", "max")]
    assert pysniff.measured == 0.625 and pysniff.met
    sys_ = goals[("ntadump syscalls per 1000 frames", "fixed")]
    assert sys_.measured == 30 and sys_.met is False
    assert sys_.verdict() == "missed by 20.0/1k"
    assert goals[("pysniff syscalls per 1000 frames", "fixed")].met
    assert goals[("pysniff wakeups per 1000 frames", "fixed")].measured == 6
    assert goals[("ntadump wakeups per 1000 frames", "fixed")].met
    total = goals[("pysniff+softirq/frame vs afpacket's", "max")]
    assert total.measured == round((25 + 16 - 10) / (40 + 20 - 10), 3) and total.met
    assert goals[("ntadump+softirq/frame vs tcpdump's", "max")].met


def test_a_ratio_missed_says_by_how_much() -> None:
    slow = [
        trial("tcpdump", 0, 0.010, 0.0, "web"),
        trial("ntadump", 0, 0.008, 0.0, "web"),
    ]
    goal = goals_of(summarize(slow))[("ntadump CPU/frame vs tcpdump's", "web")]
    assert goal.measured == 0.8 and goal.met is False
    assert goal.verdict() == "missed by 0.30x"


def test_targets_not_measured_say_so() -> None:
    trials = [t for t in rounds_of() if t.sniffer != "afpacket"]
    no_trace = [
        Trial(**{**asdict(t), "syscalls": None}) if t.sniffer == "pysniff" else t for t in trials
    ]
    goals = goals_of(summarize(no_trace))
    assert goals[("pysniff CPU/frame vs afpacket's", "fixed")].verdict() == "not measured"
    assert goals[("ntadump CPU/frame vs tcpdump's", "web")].measured is None  # no web load
    # Tracing could not count: the reader's own count, said so.
    own = goals[("pysniff syscalls per 1000 frames", "fixed")]
    assert own.measured == 7 and own.note == "the reader's own count"


def test_table_has_every_column_and_the_targets_block() -> None:
    rows = summarize(rounds_of())
    lines = report_text(rows, targets(rows)).splitlines()
    head = lines[0]
    for name, _ in COLUMNS:
        assert name in head
    body = {line.split()[1]: line for line in lines[2 : 2 + len(SNIFFERS)]}
    assert list(body) == list(SNIFFERS)
    afp = body["afpacket"].split()
    assert afp[:5] == ["fixed", "afpacket", "2000", "1000/1000", "0"]
    assert afp[5:7] == ["40.0", "(39.0..42.0)"]  # sniffer us/frame, median (min..max)
    assert afp[-6:] == ["100", "100", "25%", "1600", "4.00x", "1.00x"]
    assert body["none"].split()[5] == "-"  # no process, no sniffer CPU
    assert body["ntadump"].split()[-4] == "-"  # no ticks counted: no share in the kernel
    assert body["tcpdump"].split()[-3] == "-"  # buffer not measured
    at = lines.index("targets (reported, not asserted):")
    assert any("ntadump syscalls per 1000 frames" in x and "missed by" in x for x in lines[at:])
    assert any("pysniff CPU/frame vs afpacket's" in x and x.endswith("met") for x in lines[at:])
    assert table([]).count("\n") == 1


def test_rows_and_targets_go_to_json() -> None:
    rows = summarize(rounds_of())
    data = json.loads(json.dumps([asdict(r) for r in rows] + [asdict(g) for g in targets(rows)]))
    assert data[0]["sniffer"] == "none" and data[0]["total_us"]["median"] == 0
    assert data[-1]["what"] == "ntadump+softirq/frame vs tcpdump's"


def test_plot_is_written(tmp_path: Path) -> None:
    rows = summarize([t for ld in ("fixed", "max") for t in rounds_of(ld)])
    plot(rows, tmp_path / "bench.png", "test")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_lines() -> None:
    head = progress_head(125.4, "fixed", 0, 2, "pysniff")
    assert head == "[2:05] load fixed round 1/2: sniffer pysniff ..."
    t = trial("pysniff", 0, 0.025, 0.016, syscalls=8, wakeups=6)
    assert progress_tail(t) == (
        " 1000/1000 frames, sniffer 25.0 us/frame, softirq 16.0 us/frame, "
        "8.0 syscalls/1k, 6.0 wakeups/1k"
    )
    assert progress_tail(trial("none", 0, 0.0, 0.01)) == (
        " 1000/1000 frames, softirq 10.0 us/frame"
    )


def test_sniffer_names_are_checked_and_ordered() -> None:
    assert parse_sniffers("ntadump,none,pysniff") == ["none", "pysniff", "ntadump"]
    with pytest.raises(UsageError, match="unknown sniffer 'nta'; known: none, none-loaded"):
        parse_sniffers("none,nta")
    with pytest.raises(UsageError, match="no sniffer given"):
        parse_sniffers(",")


def test_cli_refuses_an_unknown_sniffer_with_2_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--sniffers", "none,coalesce"]) == 2
    assert capsys.readouterr().err.startswith("ntalab: error: --sniffers: unknown sniffer")
    assert main(["bench", "--rounds", "0"]) == 2


def test_sniffer_commands() -> None:
    started = Path("/s")
    pysniff = sniffer_request("pysniff", "eth1", 20000, started)
    # Ready through the lab's protocol (the meter's own ready file), not a line.
    assert (pysniff.hold, pysniff.wait_line) == (started, None)
    assert pysniff.cmd[-7:] == ("pysniff", "-i", "eth1", "-c", "20000", "--json", "--bulk")
    assert "--coalesce" not in pysniff.cmd  # the module's default wakeup policy
    afpacket = sniffer_request("afpacket", "eth1", 5, started)
    assert afpacket.wait_line is None and "lab.guestside.afpacket" in afpacket.cmd
    ntadump = sniffer_request("ntadump", "eth1", 5, started, "/b/ntadump")
    assert ntadump.wait_line == "ntadump: listening on"
    assert ntadump.cmd == ("/b/ntadump", "-i", "eth1", "-c", "5", "-w", "/dev/null")
    tcpdump = sniffer_request("tcpdump", "eth1", 5, started)
    assert tcpdump.cmd[-10:] == ("eth1", "-n", "-Q", "in", "-w", "/dev/null", "-c", "5", "-B",
                                 "2048")  # fmt: skip
    assert sniffer_request("none", "eth1", 5, started) == Meter(hold=started)
    assert sniffer_request("none-loaded", "eth1", 5, started) == Meter(hold=started)
    with pytest.raises(UsageError):
        sniffer_request("nta", "eth1", 5, started)


def meter_report(stdout: str = "", stderr: str = "") -> MeterReport:
    return MeterReport(0, 0.1, 1.0, {"softirq": 0.1}, stdout, stderr)


def test_what_each_sniffer_says_of_itself() -> None:
    nd = sniffer_figures(
        "ntadump",
        meter_report(stderr=(
            "ntadump: listening on eth1\n"
            "20000 frames captured, 812 system calls, 405 wakeups\n"
            "eth1: 20010 received, 20000 captured, 10 not delivered to ntadump"
            " (unserved 0, not_shared 0, ring_full 10, skipped 0, fault_dropped 0)\n"
        )),
        20010, "eth1",
    )  # fmt: skip
    assert (nd.delivered, nd.own_syscalls, nd.own_wakeups, nd.reader_missed) == (
        20000, 812, 405, 10,
    )  # fmt: skip
    assert nd.buf_bytes == 20000 * 4096
    td = sniffer_figures("tcpdump", meter_report(stderr="x\n19990 packets captured\n"), 0, "e")
    assert td.delivered == 19990 and td.buf_bytes is None
    afp = AfpacketReport(100, 6400, 0, 0, 1.0, 0.1, 0.1, blocks=3, bytes_in_blocks=9000)
    got = sniffer_figures("afpacket", meter_report(json.dumps(asdict(afp))), 0, "e")
    assert (got.delivered, got.buf_bytes) == (100, 9000)
    sn = SniffReport(
        frames=50, bytes=3200, per_interface={"eth1": 50}, committed=50, refused=0, pending=0,
        crc_sum=0, max_wait_us=0, elapsed_s=1.0, syscalls=9, stats_before=Stats(),
        stats_after=Stats(), reader=ReaderStats(records=52, wakeups=4),
    )  # fmt: skip
    py = sniffer_figures("pysniff", meter_report(sn.to_json()), 0, "eth1")
    assert (py.delivered, py.buf_bytes, py.own_syscalls, py.own_wakeups) == (50, 52 * 4096, 9, 4)
    assert sniffer_figures("none-loaded", meter_report(), 77, "e").delivered == 77
