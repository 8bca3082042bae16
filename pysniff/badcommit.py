"""Malformed commits sent on purpose, one kind per reason the module refuses.

Each kind breaks one rule of ``struct nta_commit`` for the chunks the reader
is about to commit (all it holds but the ``hold`` newest), so each refusal
lands on one ``nta_bad_commit`` reason:

    length      a write() whose length is not a multiple of commit_size
    node        node index = the pool's node_count (out of range)
    offset      the frame offset plus one (same chunk, not the published offset)
    state       every chunk committed twice: the second is refused
    generation  the generation plus one (stale)
    owner       a second reader commits the first one's chunks: it binds the
                same pools (it attaches the same devices, a filter keeping no
                frame, and detaches them: its slots stay bound), and no such
                chunk is shared with it, so they are refused as state
    pool        the pool a slot the reader has not bound (or past the last one)
    reserved    reserved = 1
    random      random bytes with a non-zero reserved field (refused as reserved)
    ring        (commit ring only) a producer index past the ring's end

``via="write"`` sends each malformed commit in a write() of its own (the
module stops a write at its first refused commit); ``via="ring"`` puts them
in the commit ring, where each entry is checked on its own, and makes the
module take them (poll). Only ``state`` hands chunks back (its first copy
of each commit is a good one); every other kind leaves them pending for the
normal commit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from pysniff import abi
from pysniff.bpf import Insn
from pysniff.errors import SniffError
from pysniff.reader import Chunk, Reader

KINDS = (
    "length", "node", "offset", "state", "generation", "owner", "pool", "reserved", "random",
    "ring",
)  # fmt: skip
WRITE_ONLY = ("length",)
RING_ONLY = ("ring",)
_PACK = abi.COMMIT.struct.pack
# node, offset, generation, pool, reserved: struct nta_commit's members.
Commit = tuple[int, int, int, int, int]
# A filter keeping no frame (BPF_RET | BPF_K, 0): the second reader is fed nothing.
NOTHING = (Insn(0x06, 0, 0, 0),)


def _pack(commits: Sequence[Commit]) -> bytes:
    return b"".join(_PACK(*c) for c in commits)


class BadCommitter:
    """Sends each requested kind of malformed commit for a reader's pending chunks."""

    def __init__(
        self,
        reader: Reader,
        kinds: Sequence[str],
        open_second: Callable[[], Reader],
        via: str = "write",
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown bad commit kind {', '.join(unknown)}; known: {KINDS}")
        skip = RING_ONLY if via == "write" else WRITE_ONLY
        # state last: it commits the chunks the other kinds refer to.
        wanted = sorted(set(kinds) - set(skip), key=lambda k: (k == "state", KINDS.index(k)))
        self.kinds = wanted
        self.reader = reader
        self.via = via
        self.open_second = open_second
        self.second: Reader | None = None
        self.rng = random.Random(seed)
        self.sent = dict.fromkeys(self.kinds, 0)
        self.refused = dict.fromkeys(self.kinds, 0)

    def send(self) -> None:
        """One round: every kind, for the chunks the next commit would hand back."""
        r = self.reader
        chunks = r.pending_chunks()[: max(0, r.pending - r.hold)]
        if not chunks:
            return
        for kind in self.kinds:
            getattr(self, f"_{kind}")(chunks)

    def close(self) -> None:
        if self.second is not None:
            self.second.close()
            self.second = None

    # -- the two ways in --------------------------------------------------------

    def _refused(self, kind: str, commits: list[Commit], by: Reader) -> None:
        """Each commit sent, all expected refused: counted as the module counts them."""
        self.sent[kind] += len(commits)
        if self.via == "ring":
            by.ring_commits(_pack(commits))
            by.kick()  # the module takes the ring now (a refused entry frees nothing)
            self.refused[kind] += len(commits)
            return
        for c in commits:
            self.refused[kind] += 1 - by.write_commits(_PACK(*c))

    # -- one method per kind ------------------------------------------------------

    def _length(self, chunks: list[Chunk]) -> None:
        c = chunks[0]
        data = _PACK(c.node, c.offset, c.generation, c.pool, 0) + b"\0"
        self.sent["length"] += 1
        self.refused["length"] += 1 - self.reader.write_commits(data)

    def _node(self, chunks: list[Chunk]) -> None:
        pools = self.reader.pools
        # A chunk of a pool the reader could not map (a bad record's) gets the last index.
        past = [p.node_count if p else 0xFFFFFFFF for p in pools]
        commits = [(past[c.pool] if c.pool < len(past) else 0, c.offset, c.generation, c.pool, 0)
                   for c in chunks]  # fmt: skip
        self._refused("node", commits, self.reader)

    def _offset(self, chunks: list[Chunk]) -> None:
        page = self.reader.meta.chunk_size
        # +1 stays in the chunk (a frame never starts at its last byte); -1 if it would not.
        moved = [c.offset + 1 if (c.offset + 1) % page else c.offset - 1 for c in chunks]
        commits = [(c.node, o, c.generation, c.pool, 0) for c, o in zip(chunks, moved, strict=True)]
        self._refused("offset", commits, self.reader)

    def _generation(self, chunks: list[Chunk]) -> None:
        commits = [(c.node, c.offset, (c.generation + 1) & 0xFFFFFFFF, c.pool, 0) for c in chunks]
        self._refused("generation", commits, self.reader)

    def _reserved(self, chunks: list[Chunk]) -> None:
        commits = [(c.node, c.offset, c.generation, c.pool, 1) for c in chunks]
        self._refused("reserved", commits, self.reader)

    def _owner(self, chunks: list[Chunk]) -> None:
        second = self.second
        if second is None:
            second = self.second = self.open_second()
            second.set_filter(NOTHING)  # nothing published to it while it is attached
            for index in self.reader.attached:
                second.attach(index)
                second.detach(index)  # its pool slot stays bound
        # The same pool, in the second reader's slot for it (by device).
        theirs = {p.ifindex: k for k, p in enumerate(second.pool_slots()) if p.bound}
        mine = self.reader.pool_slots()
        commits = [
            (c.node, c.offset, c.generation, theirs.get(_ifindex(mine, c.pool), abi.MAX_POOLS), 0)
            for c in chunks
        ]
        self._refused("owner", commits, second)

    def _pool(self, chunks: list[Chunk]) -> None:
        unbound = [p for p, info in enumerate(self.reader.pool_slots()) if not info.bound]
        pool = unbound[0] if unbound else abi.MAX_POOLS
        commits = [(c.node, c.offset, c.generation, pool, 0) for c in chunks]
        self._refused("pool", commits, self.reader)

    def _random(self, chunks: list[Chunk]) -> None:
        size = abi.COMMIT.size
        count = min(len(chunks), self.reader.meta.max_commit_batch)
        data = self.rng.randbytes(size * count)
        # A zero reserved field (1 in 65536) is dropped: then the commit is refused as
        # reserved, always, before anything else is looked at (nta_commit_check()).
        commits = [c for c in abi.COMMIT.struct.iter_unpack(data) if c[4]]
        self._refused("random", commits, self.reader)

    def _ring(self, chunks: list[Chunk]) -> None:
        r = self.reader
        good = r.commit_producer
        r.set_commit_producer(good + r.meta.commit_entries + 1)
        r.kick()  # the module looks, refuses the ring once, takes nothing
        r.set_commit_producer(good)
        self.sent["ring"] += 1
        self.refused["ring"] += 1

    def _state(self, chunks: list[Chunk]) -> None:
        r = self.reader
        good = [(c.node, c.offset, c.generation, c.pool, 0) for c in chunks]
        # The first copies are good commits: the reader's, not malformed ones.
        if self.via == "ring":
            r.ring_commits(_pack(good))
        else:
            step = r.meta.max_commit_batch
            for at in range(0, len(good), step):
                part = good[at : at + step]
                if r.write_commits(_pack(part)) != len(part):
                    raise SniffError("the module refused good commits")
        r.forget_pending(len(good))
        r.committed += len(good)
        self._refused("state", good, r)


def _ifindex(slots: list[abi.PoolInfo], pool: int) -> int:
    """The device pool slot `pool` serves (0, no device, if it is unbound)."""
    return slots[pool].ifindex if pool < len(slots) and slots[pool].bound else 0
