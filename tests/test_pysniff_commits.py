"""Commits: the ring and write(), batching, hold, refusals, each kind of malformed commit."""

from __future__ import annotations

import pytest

from pysniff import abi
from pysniff.badcommit import KINDS, RING_ONLY, WRITE_ONLY, BadCommitter
from pysniff.fake import FakeNta, ethernet
from pysniff.reader import Reader


def fill(nta: FakeNta, reader: Reader, n: int) -> None:
    """n frames delivered and read (not committed yet)."""
    for i in range(n):
        nta.deliver(1, ethernet(bytes([i]) * 60))
    assert len(list(reader.frames())) == n


def held(nta: FakeNta) -> int:
    return nta.readers[0].outstanding


def test_default_commits_everything_when_the_caller_comes_back() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), via="write") as r:
        fill(nta, r, 10)
        assert r.pending == 10 and nta.writes == []  # the caller may still use the bytes
        assert r.wait(0) is False
        assert nta.writes == [10] and r.committed == 10 and r.pending == 0
        assert held(nta) == 0


def test_commit_every_writes_fixed_batches() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), commit_every=4, via="write") as r:
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
        assert held(nta) == 3
        r.commit(keep=0)
        r.wait(0)
        assert held(nta) == 0


def test_no_auto_commit_leaves_it_to_close() -> None:
    nta = FakeNta()
    r = Reader(["lo"], nta.open(), commit=False)
    fill(nta, r, 6)
    r.wait(0)
    assert nta.writes == [] and r.pending == 6 and held(nta) == 6
    r.close()
    assert nta.stats["returned_on_close"] == 6 and nta.stats["committed"] == 0


def test_writes_respect_max_commit_batch() -> None:
    nta = FakeNta(max_commit_batch=4)
    with Reader(["lo"], nta.open(), via="write") as r:
        fill(nta, r, 10)
        assert r.commit().accepted == 10 and nta.writes == [4, 4, 2]


def test_a_write_stops_at_its_first_refused_commit() -> None:
    """write() returns the accepted prefix: a write-all loop resumes at the refused one."""
    nta = FakeNta()
    with Reader(["lo"], nta.open(), via="write") as r:
        fill(nta, r, 4)
        good = [abi.COMMIT.pack(c._asdict()) for c in r.pending_chunks()]
        bad = abi.COMMIT.pack(node=99)
        assert r.write_commits(good[0] + good[1] + bad + good[2]) == 2
        assert nta.bad_commits[abi.BadCommit.NODE] == 1  # counted once; good[2] never checked
        assert r.write_commits(bad + good[2]) == 0  # EINVAL: the first is refused
        assert r.write_commits(good[2] + good[3]) == 2 and held(nta) == 0


def test_refusals_through_write_are_counted_not_raised() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), via="write") as r:
        fill(nta, r, 3)
        last = r.pending_chunks()[-1]
        # The chunk goes back behind the reader's back: its own commit is then refused.
        nta.readers[0].write(abi.COMMIT.pack(last._asdict()))
        result = r.commit()
        assert (result.accepted, result.refused) == (2, 1)
        assert (r.committed, r.refused) == (2, 1)
        assert nta.bad_commits[abi.BadCommit.STATE] == 1


# kind -> (the reason the module counts, refusals per round of 5 chunks, chunks it commits)
EXPECT = {
    "length": ({abi.BadCommit.LENGTH: 1}, 1, 0),
    "node": ({abi.BadCommit.NODE: 5}, 5, 0),
    "offset": ({abi.BadCommit.OFFSET: 5}, 5, 0),
    "state": ({abi.BadCommit.STATE: 5}, 5, 5),
    "generation": ({abi.BadCommit.GENERATION: 5}, 5, 0),
    # The second reader binds the same pool: no such chunk is shared with it.
    "owner": ({abi.BadCommit.STATE: 5}, 5, 0),
    "pool": ({abi.BadCommit.POOL: 5}, 5, 0),
    "reserved": ({abi.BadCommit.RESERVED: 5}, 5, 0),
    "ring": ({abi.BadCommit.RING: 1}, 1, 0),
}


# Each kind through each way in it can take: a bad length is a write()'s, a bad producer index
# the commit ring's.
CASES = [
    (kind, via)
    for via in ("write", "ring")
    for kind in sorted(EXPECT)
    if kind not in (RING_ONLY if via == "write" else WRITE_ONLY)
]


@pytest.mark.parametrize(("kind", "via"), CASES)
def test_each_kind_is_refused_for_its_reason(kind: str, via: str) -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), via=via) as r:
        bad = BadCommitter(r, [kind], lambda: Reader((), nta.open(), via=via), via=via)
        fill(nta, r, 5)
        bad.send()
        reasons, refused, committed = EXPECT[kind]
        assert {abi.BadCommit(i): n for i, n in enumerate(nta.bad_commits) if n} == reasons
        assert bad.sent == {kind: refused} and bad.refused == {kind: refused}
        assert nta.readers[0].committed == committed == r.committed
        # Nothing malformed changed anything: the normal commit takes the rest back.
        r.commit()
        r.wait(0)
        assert held(nta) == 0 and r.refused == 0
        bad.close()
    assert nta.readers == []


@pytest.mark.parametrize("via", ["write", "ring"])
def test_random_bytes_are_all_refused(via: str) -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), via=via) as r:
        bad = BadCommitter(r, ["random"], lambda: Reader((), nta.open()), via=via, seed=1)
        fill(nta, r, 5)
        bad.send()
        assert bad.sent == bad.refused == {"random": 5}
        assert sum(nta.bad_commits) == 5
        r.commit()
        r.wait(0)
        assert held(nta) == 0


def test_all_kinds_together_with_hold_through_the_ring() -> None:
    nta = FakeNta()
    with Reader(["lo"], nta.open(), hold=2) as r:
        bad = BadCommitter(r, list(KINDS), lambda: Reader((), nta.open()), via="ring", seed=3)
        fill(nta, r, 6)
        bad.send()  # 4 chunks are up for commit, 2 held
        assert bad.sent == {k: 1 if k == "ring" else 4 for k in KINDS if k not in WRITE_ONLY}
        assert bad.refused == bad.sent
        assert r.committed == 4 and r.pending == 2  # state's good copies took the 4
        stats = nta.stats_now()
        for kind in ("node", "offset", "generation", "ring", "pool"):
            assert stats.bad_commits[kind] == bad.sent[kind], kind
        assert stats.bad_commits["state"] == bad.sent["state"] + bad.sent["owner"]
        assert stats.bad_commits["reserved"] == 4 + 4  # random bytes: reserved is not zero
        bad.close()


def test_unknown_kind() -> None:
    nta = FakeNta()
    with Reader([], nta.open()) as r, pytest.raises(ValueError, match="unknown bad commit"):
        BadCommitter(r, ["bogus"], lambda: Reader((), nta.open()))
