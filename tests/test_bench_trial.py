"""A bench trial's rules that need no guest: set-up failures retried once and named, the
trial's record from the meter's report, and its progress line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab import LabError
from lab.bench.loads import FrameLoad, WebLoad
from lab.bench.sniffers import SNIFFERS
from lab.bench.stats import Trial
from lab.bench.trial import SetupError, progress_detail, retried_once, setting_up, trial_of
from lab.guestnet import UserNic
from lab.guestside.reports import CpuStat, MeterReport
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


def report(exit: int | None = 0, rx: int | None = 1000, stdout: str = "") -> MeterReport:
    before = CpuStat(100, 0, 200, 10_000, 0, 0, 50, 0, 2, 100)
    after = CpuStat(150, 0, 260, 11_800, 0, 0, 70, 0, 2, 100)
    return MeterReport(
        exit, 0.25, 10.0, before, after, stdout, "ntadump: listening on eth1\n", rx_packets=rx,
        ip_packets=rx, voluntary_switches=4, syscalls=9, sniffer_user_ticks=3,
        sniffer_system_ticks=20,
    )  # fmt: skip


ND = (
    '{"frames": 1000, "bytes": 64000, "rejected": 0, "syscalls": 8, "wakeups": 4, '
    '"records": 1000, "committed": 1000, "refused": null, "interfaces": {"eth1": '
    '{"captured": 1000, "received": 1000, "published": 1000, "unserved": 0, "not_shared": 0, '
    '"ring_full": 0, "skipped": 0, "fault_dropped": 0, "gone": false}}}'
)


def test_the_trial_record_from_the_meters_report() -> None:
    load = FrameLoad("fixed", 1000, 2000.0)
    t = trial_of("bench-fixed-ntadump-0", load, SNIFFERS["ntadump"], 0, report(stdout=ND),
                 1000, "frames", 0.5, NIC)  # fmt: skip
    # 10 s x 2 CPUs less 18 s idle: 2 s busy. Softirq: 20 ticks, sampled.
    assert (t.busy_s, t.softirq_s, t.sniffer_cpu_s) == (2.0, 0.2, 0.25)
    assert (t.rx, t.seen, t.missed, t.syscalls, t.wakeups, t.own_syscalls) == (
        1000, 1000, 0, 9, 4, 8,
    )  # fmt: skip
    assert t.process and t.buf_bytes == 1000 * 4096
    assert progress_detail(t) == (
        "1000/1000 frames, guest busy 2000.0 us/frame, sniffer 250.0 us/frame, "
        "9.0 syscalls/1k, 4.0 wakeups/1k"
    )
    idle = trial_of("t", WebLoad(10), SNIFFERS["none"], 0, report(exit=None), 10, "requests",
                    1.0, NIC)  # fmt: skip
    assert not idle.process and idle.syscalls is None and idle.seen == 1000


def test_a_trial_that_cannot_be_judged_is_an_error() -> None:
    load = FrameLoad("fixed", 1000, 2000.0)
    nd = SNIFFERS["ntadump"]
    with pytest.raises(LabError, match="ntadump exited 1: ntadump: listening on eth1"):
        trial_of("t", load, nd, 0, report(exit=1, stdout=ND), 1000, "frames", 0.5, NIC)
    with pytest.raises(LabError, match=r"eth1 received 999 of the 1000 frames sent$"):
        trial_of("t", load, nd, 0, report(rx=999, stdout=ND), 1000, "frames", 0.5, NIC)
    short = replace(report(rx=999, stdout=ND), rx_missed=1)
    with pytest.raises(LabError, match=r"999 of the 1000 frames sent \(it missed 1: no buffer\)"):
        trial_of("t", load, nd, 0, short, 1000, "frames", 0.5, NIC)
    with pytest.raises(LabError, match="counted no frames on eth1"):
        trial_of("t", load, nd, 0, report(rx=None, stdout=ND), 1000, "frames", 0.5, NIC)
