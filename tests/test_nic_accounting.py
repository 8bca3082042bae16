"""A reader's verify entry against what the NIC says it missed (LabEnv.all_but_missed)."""

from __future__ import annotations

import pytest

from lab.guest import RxCounts
from lab.labenv import LabEnv
from pysniff import signature


def entry(sent: int, got: set[int]) -> dict[str, object]:
    t = signature.Tally(run_id=1, expected=sent)
    for seq in sorted(got):
        t.add("eth0", signature.payload(1, seq, 80))
    summary: dict[str, object] = t.summary()["interfaces"]["eth0"]  # type: ignore[index]
    return summary


def test_missing_exactly_what_the_nic_missed() -> None:
    got = set(range(100)) - {7, 8, 50}
    assert LabEnv.all_but_missed("rtl8139", entry(100, got), 100, RxCounts(97, 3)) == {7, 8, 50}
    assert (
        LabEnv.all_but_missed("e1000", entry(100, set(range(100))), 100, RxCounts(100, 0)) == set()
    )


@pytest.mark.parametrize(
    ("got", "rx"),
    [
        (set(range(100)) - {7, 8, 50}, RxCounts(98, 2)),  # lost one after the NIC took it
        (set(range(100)) - {7}, RxCounts(97, 3)),  # fewer missing than the NIC missed
        (set(range(100)), RxCounts(99, 1)),
    ],
)
def test_a_frame_lost_past_the_nic_fails(got: set[int], rx: RxCounts) -> None:
    with pytest.raises(AssertionError, match="frames lost"):
        LabEnv.all_but_missed("rtl8139", entry(100, got), 100, rx)


def test_duplicates_or_nothing_seen_fail_whatever_the_nic_missed() -> None:
    dup = entry(10, set(range(9)))
    dup["duplicates"], dup["seen"] = 1, 10
    with pytest.raises(AssertionError):
        LabEnv.all_but_missed("rtl8139", dup, 10, RxCounts(9, 1))
    with pytest.raises(AssertionError):
        LabEnv.all_but_missed("rtl8139", {}, 10, RxCounts(0, 10))
