"""The frame signature and the verify tally: missing ranges, duplicates, corruption."""

from __future__ import annotations

from pysniff import signature


def test_ranges_fold_runs() -> None:
    assert signature.ranges([]) == []
    assert signature.ranges([5, 1, 2, 3, 9, 10]) == [[1, 3], [5, 5], [9, 10]]


def test_expand_undoes_ranges() -> None:
    numbers = {0, 1, 2, 7, 40, 41}
    assert signature.expand(signature.ranges(numbers)) == numbers
    assert signature.expand([]) == set()


def test_perfect_but_for_the_missing() -> None:
    t = signature.Tally(run_id=3, expected=10)
    for seq in (0, 1, 2, 6, 7, 8, 9):
        t.add("eth0", signature.payload(3, seq, 64))
    entry = t.summary().of("eth0")
    assert entry == signature.perfect(10, [[3, 5]])
    assert entry != signature.perfect(10)
    assert entry != signature.perfect(10, [[3, 4]])


def test_tally_counts_every_anomaly() -> None:
    t = signature.Tally(run_id=7, expected=10)
    for seq in (0, 1, 2, 2, 5, 9):
        t.add("eth0", b"\0" * 14 + signature.payload(7, seq, 100))
    bad = bytearray(signature.payload(7, 3, 100))
    bad[-1] ^= 1
    t.add("eth0", bytes(bad))
    t.add("eth0", signature.payload(8, 4, 100))  # another run
    t.add("eth0", b"no signature here")
    eth0 = signature.IfaceTally(6, 5, 1, 1, [[3, 4], [6, 8]])
    assert t.summary() == signature.TallySummary(7, 10, {"eth0": eth0}, foreign=1, unsigned=1)


def test_perfect_is_what_a_clean_run_tallies() -> None:
    t = signature.Tally(run_id=1, expected=3)
    for seq in range(3):
        t.add("eth1", signature.payload(1, seq, 24))
    assert t.summary().interfaces == {"eth1": signature.perfect(3)}
