"""A bench trial's rules that need no guest: set-up failures retried once and named, the
trial's record from the meter's report, and its progress line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lab import LabError
from lab.bench.loads import FrameLoad, WebLoad
from lab.bench.sniffers import SNIFFERS, Tools
from lab.bench.stats import Trial
from lab.bench.trial import (
    SetupError,
    meter_request,
    progress_detail,
    retried_once,
    setting_up,
    trial_of,
)
from lab.guestnet import UserNic
from lab.guestside.reports import CpuStat, MeterReport, SnifferOutput
from lab.wait import WaitTimeout

NIC = UserNic("eth1", "52:54:00:4e:fe:00", "10.77.254.2")


def a_trial(**kw: object) -> Trial:
    fields: dict[str, object] = dict(
        load="fixed", sniffer="ntadump", round=0, process=True, sent=100, sent_unit="frames",
        sent_s=0.05, rx=100, stack=100, seen=100, missed=0, window_s=0.1, busy_s=0.01,
        softirq_s=0.0,
        sniffer_cpu_s=0.001, module_loaded=True, syscalls=3, wakeups=1,
    )  # fmt: skip
    fields.update(kw)
    return Trial(**fields)  # type: ignore[arg-type]


def test_a_setup_failure_is_retried_once_and_recorded() -> None:
    calls: list[str] = []
    retrying: list[str] = []

    def attempt() -> Trial:
        calls.append("x")
        if len(calls) == 1:
            with setting_up("ntadump, under the meter"):
                raise WaitTimeout("bench-x to be ready (bench-x.ready): not within 120s")
        return a_trial()

    trial = retried_once(attempt, retrying.append)
    why = (
        "ntadump, under the meter was not ready: "
        "bench-x to be ready (bench-x.ready): not within 120s"
    )
    assert len(calls) == 2 and retrying == [why]
    assert trial.retries == (why,)


def test_a_second_setup_failure_names_what_was_not_ready_both_times() -> None:
    n = 0

    def attempt() -> Trial:
        nonlocal n
        n += 1
        with setting_up("eth1's link"):
            raise WaitTimeout(f"carrier on eth1: not within {30 * n}s")

    with pytest.raises(LabError) as err:
        retried_once(attempt, lambda why: None)
    assert not isinstance(err.value, SetupError)
    assert str(err.value) == (
        "eth1's link was not ready: carrier on eth1: not within 60s; "
        "the first time: carrier on eth1: not within 30s"
    )


def test_a_failure_after_the_window_opened_is_not_retried() -> None:
    calls = 0

    def attempt() -> Trial:
        nonlocal calls
        calls += 1
        raise LabError("ntadump exited 1")

    with pytest.raises(LabError, match="ntadump exited 1"):
        retried_once(attempt, lambda why: None)
    assert calls == 1


def report(exit: int | None = 0, rx: int | None = 1000, *stdouts: str) -> MeterReport:
    """The meter's report: a copy of the sniffer per stdout given, each ended with ``exit``
    (None: no sniffer)."""
    before = CpuStat(100, 0, 200, 10_000, 0, 0, 50, 0, 2, 100)
    after = CpuStat(150, 0, 260, 11_800, 0, 0, 70, 0, 2, 100)
    said = "ntadump: listening on eth1\n"
    copies = [] if exit is None else [SnifferOutput(exit, out, said) for out in stdouts or ("",)]
    return MeterReport(
        copies, 0.25, 10.0, before, after, rx_packets=rx, ip_packets=rx, voluntary_switches=4,
        syscalls=9, sniffer_user_ticks=3, sniffer_system_ticks=20,
    )  # fmt: skip


ND = (
    '{"frames": 1000, "bytes": 64000, "rejected": 0, "syscalls": 8, "wakeups": 4, '
    '"records": 1000, "committed": 1000, "refused": null, "interfaces": {"eth1": '
    '{"captured": 1000, "received": 1000, "published": 1000, "unserved": 0, "not_shared": 0, '
    '"ring_full": 0, "skipped": 0, "fault_dropped": 0, "gone": false}}}'
)


def test_the_trial_record_from_the_meters_report() -> None:
    load = FrameLoad("fixed", 1000, 2000.0)
    t = trial_of("bench-fixed-ntadump-0", load, SNIFFERS["ntadump"], 0, report(0, 1000, ND),
                 1000, "frames", 0.5, NIC)  # fmt: skip
    # 10 s x 2 CPUs less 18 s idle: 2 s busy. Softirq: 20 ticks, sampled.
    assert (t.busy_s, t.softirq_s, t.sniffer_cpu_s) == (2.0, 0.2, 0.25)
    assert (t.rx, t.seen, t.missed, t.syscalls, t.wakeups, t.own_syscalls) == (
        1000, 1000, 0, 9, 4, 8,
    )  # fmt: skip
    assert t.process and t.buf_bytes == 1000 * 4096
    assert (t.seen_each, t.missed_each) == ((1000,), (0,))
    assert progress_detail(t) == (
        "1000/1000 frames, guest busy 2000.0 us/frame, sniffer 250.0 us/frame, "
        "9.0 syscalls/1k, 4.0 wakeups/1k"
    )
    idle = trial_of("t", WebLoad(10), SNIFFERS["none"], 0, report(exit=None), 10, "requests",
                    1.0, NIC)  # fmt: skip
    assert not idle.process and idle.syscalls is None and idle.seen == 1000
    assert (idle.seen_each, idle.missed_each) == ((1000,), (None,))


def test_two_readers_on_one_device_make_one_record() -> None:
    """Two copies of ntadump: each must see every frame, so the record holds the fewest
    seen and the most missed, and each copy's; their own counts summed, as the meter sums
    its counts of them; a buffer per reader (they share the chunks)."""
    second = json.loads(ND)
    second.update(frames=999, syscalls=10, wakeups=5, records=999)
    second["interfaces"]["eth1"].update(captured=999, ring_full=1)
    load = FrameLoad("two-readers", 1000, 2000.0, readers=2)
    t = trial_of("t", load, SNIFFERS["ntadump"], 0, report(0, 1000, ND, json.dumps(second)),
                 1000, "frames", 0.5, NIC)  # fmt: skip
    assert (t.seen, t.missed, t.seen_each, t.missed_each) == (999, 1, (1000, 999), (0, 1))
    assert (t.own_syscalls, t.own_wakeups, t.buf_bytes) == (18, 9, 1000 * 4096)
    assert (t.sniffer_cpu_s, t.syscalls, t.wakeups) == (0.25, 9, 4)  # the meter's, as it said
    assert progress_detail(t) == (
        "1000+999 of 1000 frames by 2 copies, guest busy 2000.0 us/frame, sniffer 250.0 "
        "us/frame, 9.0 syscalls/1k, 4.0 wakeups/1k, missed 0+1"
    )
    # A copy the module refused (a second reader of the device, before NTA shared one).
    busy = SnifferOutput(1, "", "ntadump: eth1: Device or resource busy\n")
    refused = replace(report(0, 1000, ND, ND), copies=[SnifferOutput(0, ND, ""), busy])
    with pytest.raises(LabError) as err:
        trial_of("t", load, SNIFFERS["ntadump"], 0, refused, 1000, "frames", 0.5, NIC)
    assert str(err.value) == (
        "t: ntadump (copy 2 of 2) exited 1: ntadump: eth1: Device or resource busy\n"
    )


def test_a_trial_that_cannot_be_judged_is_an_error() -> None:
    load = FrameLoad("fixed", 1000, 2000.0)
    nd = SNIFFERS["ntadump"]
    with pytest.raises(LabError, match="ntadump exited 1: ntadump: listening on eth1"):
        trial_of("t", load, nd, 0, report(1, 1000, ND), 1000, "frames", 0.5, NIC)
    with pytest.raises(LabError, match=r"eth1 received 999 of the 1000 frames sent$"):
        trial_of("t", load, nd, 0, report(0, 999, ND), 1000, "frames", 0.5, NIC)
    short = replace(report(0, 999, ND), rx_missed=1)
    with pytest.raises(LabError, match=r"999 of the 1000 frames sent \(it missed 1: no buffer\)"):
        trial_of("t", load, nd, 0, short, 1000, "frames", 0.5, NIC)
    with pytest.raises(LabError, match="counted no frames on eth1"):
        trial_of("t", load, nd, 0, report(0, None, ND), 1000, "frames", 0.5, NIC)


def test_the_meter_runs_as_many_copies_as_the_load_has_readers() -> None:
    tools, started = Tools(ntadump="/b/ntadump", tcpdump="/usr/bin/tcpdump"), Path("/r/s")
    two = FrameLoad("two-readers", 1000, 2000.0, readers=2)
    nd = meter_request(two, SNIFFERS["ntadump"], "eth1", tools, started)
    assert (nd.copies, nd.hold, nd.iface, nd.expect_rx) == (2, started, "eth1", 1000)
    assert nd.cmd == ("/b/ntadump", "-i", "eth1", "-Q", "in", "-w", "/dev/null", "--json",
                      "-c", "1000")  # fmt: skip
    one = meter_request(FrameLoad("fixed", 1000, 2000.0), SNIFFERS["ntadump"], "eth1", tools,
                        started)  # fmt: skip
    assert one == replace(nd, copies=1)
    # No sniffer: the window alone, whatever the load (the meter refuses copies of nothing).
    idle = meter_request(two, SNIFFERS["none"], "eth1", tools, started)
    assert (idle.copies, idle.cmd, idle.module) == (1, (), None)
