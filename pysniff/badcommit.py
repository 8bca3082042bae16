"""Malformed commits sent on purpose, one kind per reason the module refuses.

Each kind breaks one rule of ``struct nta_commit`` for the chunks the reader
is about to commit (all it holds but the ``hold`` newest), so each refusal
lands on one ``nta_bad_commit`` reason:

    length      a write() whose length is not a multiple of commit_size
    node        node index = node_count (out of range)
    offset      the frame offset plus one (same chunk, not the published offset)
    state       every chunk committed twice in one write: the second is refused
    generation  the generation plus one (stale)
    owner       a second reader, holding nothing, commits the first one's chunks
    reserved    reserved = 1
    random      random bytes (refused, mostly as reserved)

Only ``state`` hands chunks back (its first copy of each commit is a good
one); every other kind leaves them pending for the normal commit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from pysniff import abi
from pysniff.reader import Chunk, Reader

KINDS = ("length", "node", "offset", "state", "generation", "owner", "reserved", "random")
_PACK = abi.COMMIT.struct.pack


def _pack(commits: Sequence[tuple[int, int, int, int]]) -> bytes:
    return b"".join(_PACK(*c) for c in commits)


class BadCommitter:
    """Sends each requested kind of malformed commit for a reader's pending chunks."""

    def __init__(
        self,
        reader: Reader,
        kinds: Sequence[str],
        open_second: Callable[[], Reader],
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown bad commit kind {', '.join(unknown)}; known: {KINDS}")
        # state last: it commits the chunks the other kinds refer to.
        self.kinds = sorted(set(kinds), key=lambda k: (k == "state", KINDS.index(k)))
        self.reader = reader
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

    # -- one method per kind; each records what it sent and what was refused --

    def _count(self, kind: str, sent: int, accepted: int) -> None:
        self.sent[kind] += sent
        self.refused[kind] += sent - accepted

    def _each(self, kind: str, commits: list[tuple[int, int, int, int]], by: Reader) -> None:
        step = by.meta.max_commit_batch
        for at in range(0, len(commits), step):
            part = commits[at : at + step]
            self._count(kind, len(part), by.write_commits(_pack(part)))

    def _length(self, chunks: list[Chunk]) -> None:
        c = chunks[0]
        data = _PACK(c.node, c.offset, c.generation, 0) + b"\0"
        self._count("length", 1, self.reader.write_commits(data))

    def _node(self, chunks: list[Chunk]) -> None:
        n = self.reader.meta.node_count
        self._each("node", [(n, c.offset, c.generation, 0) for c in chunks], self.reader)

    def _offset(self, chunks: list[Chunk]) -> None:
        page = self.reader.meta.chunk_size
        # +1 stays in the chunk (a frame never starts at its last byte); -1 if it would not.
        moved = [c.offset + 1 if (c.offset + 1) % page else c.offset - 1 for c in chunks]
        commits = [(c.node, o, c.generation, 0) for c, o in zip(chunks, moved, strict=True)]
        self._each("offset", commits, self.reader)

    def _generation(self, chunks: list[Chunk]) -> None:
        commits = [(c.node, c.offset, (c.generation + 1) & 0xFFFFFFFF, 0) for c in chunks]
        self._each("generation", commits, self.reader)

    def _reserved(self, chunks: list[Chunk]) -> None:
        self._each("reserved", [(c.node, c.offset, c.generation, 1) for c in chunks], self.reader)

    def _owner(self, chunks: list[Chunk]) -> None:
        if self.second is None:
            self.second = self.open_second()
        commits = [(c.node, c.offset, c.generation, 0) for c in chunks]
        self._each("owner", commits, self.second)

    def _random(self, chunks: list[Chunk]) -> None:
        size = abi.COMMIT.size
        data = self.rng.randbytes(size * min(len(chunks), self.reader.meta.max_commit_batch))
        self._count("random", len(data) // size, self.reader.write_commits(data))

    def _state(self, chunks: list[Chunk]) -> None:
        r = self.reader
        step = max(1, r.meta.max_commit_batch // 2)
        for at in range(0, len(chunks), step):
            part = [(c.node, c.offset, c.generation, 0) for c in chunks[at : at + step]]
            accepted = r.write_commits(_pack(part) + _pack(part))
            # The first copies are good commits: the reader's, not malformed ones.
            r.forget_pending(len(part))
            r.committed += min(accepted, len(part))
            r.refused += len(part) - min(accepted, len(part))
            self._count("state", len(part), accepted - min(accepted, len(part)))
