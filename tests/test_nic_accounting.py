"""A reader's tally against what the NIC says it missed (checks.nic_took, checks.all_but_missed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab import checks
from lab.records import RxCounts
from pysniff import signature
from pysniff.signature import IfaceTally


def entry(sent: int, got: set[int]) -> IfaceTally:
    t = signature.Tally(run_id=1, expected=sent)
    for seq in sorted(got):
        t.add("eth0", signature.payload(1, seq, 80))
    return t.summary().of("eth0")


def test_missing_exactly_what_the_nic_missed() -> None:
    got = set(range(100)) - {7, 8, 50}
    assert checks.all_but_missed("rtl8139", entry(100, got), 100, RxCounts(97, 3)) == {7, 8, 50}
    assert (
        checks.all_but_missed("e1000", entry(100, set(range(100))), 100, RxCounts(100, 0)) == set()
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
        checks.all_but_missed("rtl8139", entry(100, got), 100, rx)


def test_duplicates_or_nothing_seen_fail_whatever_the_nic_missed() -> None:
    dup = replace(entry(10, set(range(9))), duplicates=1, seen=10)
    with pytest.raises(AssertionError):
        checks.all_but_missed("rtl8139", dup, 10, RxCounts(9, 1))
    with pytest.raises(AssertionError):
        checks.all_but_missed("rtl8139", IfaceTally(), 10, RxCounts(0, 10))


def test_every_frame_sent_is_taken_or_missed() -> None:
    checks.nic_took("rtl8139", 100, RxCounts(97, 3), flow_control=False)
    with pytest.raises(AssertionError, match="100 sent, 96 received, 3 missed"):
        checks.nic_took("rtl8139", 100, RxCounts(96, 3), flow_control=False)
    with pytest.raises(AssertionError, match="has flow control, yet missed 3"):
        checks.nic_took("e1000", 100, RxCounts(97, 3), flow_control=True)


def test_subsequence_allows_exactly_the_missed_frames() -> None:
    sent = [bytes([i]) * 60 for i in range(6)]
    checks.subsequence("x", sent, sent, 0)
    checks.subsequence("x", [sent[0], sent[2], sent[5]], sent, 3)
    with pytest.raises(AssertionError, match="want 6 - 1 missed"):
        checks.subsequence("x", sent[:4], sent, 1)
    with pytest.raises(AssertionError, match=r"frame 1 .* never sent"):
        checks.subsequence("x", [sent[1], sent[0]], sent, 4)
    with pytest.raises(AssertionError, match="never sent"):
        checks.subsequence("x", [sent[0], b"\xff" * 60], sent, 4)
