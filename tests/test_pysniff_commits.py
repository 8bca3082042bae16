"""Commits: batching, commit_every, hold, refusals, and each kind of malformed commit."""

from __future__ import annotations

import pytest

from pysniff import abi
from pysniff.badcommit import KINDS, BadCommitter
from pysniff.fake import FakeNta, ethernet
from pysniff.reader import Reader


def fill(nta: FakeNta, reader: Reader, n: int) -> None:
    """n frames delivered and read (not committed yet)."""
    for i in range(n):
        nta.deliver(1, ethernet(bytes([i]) * 60))
    assert len(list(reader.frames())) == n


def test_default_commits_everything_when_the_caller_comes_back() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open()) as r:
        fill(nta, r, 10)
        assert r.pending == 10 and nta.writes == []  # the caller may still use the bytes
        assert r.wait(0) is False
        assert nta.writes == [10] and r.committed == 10 and r.pending == 0
        assert nta.stats["outstanding"] == 0 and nta.stats["in_use"] == 0


def test_commit_every_writes_fixed_batches() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), commit_every=4) as r:
        fill(nta, r, 10)
        r.wait(0)
        assert nta.writes == [4, 4] and r.pending == 2
        fill(nta, r, 1)
        r.wait(0)
        assert nta.writes == [4, 4] and r.pending == 3  # 3 < 4: nothing yet
        assert r.commit().accepted == 3  # explicit: the rest, still in batches of 4 at most
        assert nta.writes == [4, 4, 3] and r.committed == 11


def test_hold_keeps_the_newest_chunks() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), hold=3) as r:
        fill(nta, r, 10)
        newest = r.pending_chunks()[-3:]
        r.wait(0)
        assert r.committed == 7 and r.pending_chunks() == newest
        assert nta.stats["outstanding"] == 3
        assert r.commit(keep=0).accepted == 3 and nta.stats["outstanding"] == 0


def test_no_auto_commit_leaves_it_to_close() -> None:
    nta = FakeNta()
    r = Reader(["lo"], nta.open(), commit=False)
    fill(nta, r, 6)
    r.wait(0)
    assert nta.writes == [] and r.pending == 6
    r.close()
    assert nta.stats["returned_on_close"] == 6 and nta.stats["committed"] == 0


def test_writes_respect_max_commit_batch() -> None:
    nta = FakeNta(max_commit_batch=4)
    with Reader(["lo"], nta.open()) as r:
        fill(nta, r, 10)
        assert r.commit().accepted == 10 and nta.writes == [4, 4, 2]


def test_refusals_are_counted_not_raised() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open()) as r:
        fill(nta, r, 3)
        first = r.pending_chunks()[0]
        # The chunk goes back behind the reader's back: its own commit is then refused.
        nta.readers[0].write(abi.COMMIT.pack(first._asdict()))
        result = r.commit()
        assert (result.accepted, result.refused) == (2, 1)
        assert (r.committed, r.refused) == (2, 1)
        assert nta.bad_commits[abi.BadCommit.STATE] == 1
        fill(nta, r, 1)
        dup = r.pending_chunks()[0]
        nta.readers[0].write(abi.COMMIT.pack(dup._asdict()))
        result = r.commit()  # none accepted: write() says EINVAL, the reader counts it
        assert (result.accepted, result.refused) == (0, 1) and r.refused == 2


# kind -> (the reason the module counts, refusals per round of 5 chunks, chunks it commits)
EXPECT = {
    "length": ({abi.BadCommit.LENGTH: 1}, 1, 0),
    "node": ({abi.BadCommit.NODE: 5}, 5, 0),
    "offset": ({abi.BadCommit.OFFSET: 5}, 5, 0),
    "state": ({abi.BadCommit.STATE: 5}, 5, 5),
    "generation": ({abi.BadCommit.GENERATION: 5}, 5, 0),
    "owner": ({abi.BadCommit.OWNER: 5}, 5, 0),
    "reserved": ({abi.BadCommit.RESERVED: 5}, 5, 0),
}


@pytest.mark.parametrize("kind", sorted(EXPECT))
def test_each_kind_is_refused_for_its_reason(kind: str) -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open()) as r:
        bad = BadCommitter(r, [kind], lambda: Reader((), nta.open()))
        fill(nta, r, 5)
        bad.send()
        reasons, refused, committed = EXPECT[kind]
        assert {abi.BadCommit(i): n for i, n in enumerate(nta.bad_commits) if n} == reasons
        assert bad.sent == {kind: refused} and bad.refused == {kind: refused}
        assert nta.stats["committed"] == committed == r.committed
        # Nothing malformed changed anything: the normal commit takes the rest back.
        assert r.commit().accepted == 5 - committed and r.refused == 0
        assert nta.stats["outstanding"] == 0
        bad.close()
    assert nta.readers == []


def test_random_bytes_are_all_refused() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open()) as r:
        bad = BadCommitter(r, ["random"], lambda: Reader((), nta.open()), seed=1)
        fill(nta, r, 5)
        bad.send()
        assert bad.sent == bad.refused == {"random": 5}
        assert sum(nta.bad_commits) == 5
        assert r.commit().accepted == 5


def test_all_kinds_together_with_hold() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), hold=2) as r:
        bad = BadCommitter(r, list(KINDS), lambda: Reader((), nta.open()), seed=3)
        fill(nta, r, 6)
        bad.send()  # 4 chunks are up for commit, 2 held
        assert bad.sent == {k: 1 if k == "length" else 4 for k in KINDS}
        assert bad.refused == bad.sent
        assert r.committed == 4 and r.pending == 2  # state's double commit took the 4
        stats = nta.stats_now()
        for kind in ("length", "node", "offset", "state", "generation", "owner"):
            assert stats.bad_commits[kind] == bad.sent[kind], kind
        assert stats.bad_commits["reserved"] == 4 + 4  # random bytes: reserved is not zero
        bad.close()


def test_unknown_kind() -> None:
    nta = FakeNta()
    with Reader([], nta.open()) as r, pytest.raises(ValueError, match="unknown bad commit"):
        BadCommitter(r, ["bogus"], lambda: Reader((), nta.open()))
