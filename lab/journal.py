"""A test's journal: what it did to its guest, in order, recorded where the effects happen.

``LabEnv.test_scope`` opens one per test and hands it to the choke points,
which append to it whoever calls them: the host end of each NIC
(``HostEnd.send``: every frame any code sends, threads included), the module
(``NtaModule``: load, unload, parameters), the links (``GuestNet``) and the
environment's commands and programs (``LabEnv.cmd``, ``bg``, ``spawn``).
Tests record nothing themselves. A step is appended before it runs, so a
step that hangs or crashes the guest is in the journal.

Frames are kept one pcap per send call (``frames``), its place in the order
taken when the call began; a call's frames identical to an earlier one's
share its pcap (a sender repeating one burst in a loop writes it once). When
the test ends, ``close`` writes ``journal.json`` beside the pcaps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from scapy.utils import RawPcapWriter

from lab.steps import Frames, JournalFile, Step

JOURNAL_FILE = "journal.json"


class FrameBatch:
    """The frames of one send call to one NIC, while it runs."""

    def __init__(self, nic: str, rate: float | None, t: float) -> None:
        self.nic = nic
        self.rate = rate
        self.t = t
        self.frames: list[bytes] = []
        self.background = False  # set when another step comes while this is open

    def add(self, frame: bytes) -> None:
        self.frames.append(frame)


class Journal:
    """The ordered steps of one test; safe to append to from several threads."""

    def __init__(self, test: str, outdir: Path, directory: Path, start: Sequence[Step] = ()):
        """``outdir``: the guest's results dir (paths in steps point there); ``directory``:
        where the pcaps and ``journal.json`` go. ``start``: the state the test began in, as
        steps (the module the session loaded), first in the order."""
        self.test = test
        self.outdir = outdir
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._entries: list[Step | FrameBatch | None] = list(start)
        self._open: set[FrameBatch] = set()
        self._pcaps: dict[str, str] = {}  # digest of a call's frames -> its pcap
        self.closed = False

    def _now(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def add(self, step: Step) -> None:
        """Append ``step`` (its ``t`` set now)."""
        with self._lock:
            if self.closed:
                return
            for batch in self._open:
                batch.background = True
            self._entries.append(dataclasses.replace(step, t=self._now()))

    @contextlib.contextmanager
    def frames(self, nic: str, rate: float | None) -> Iterator[FrameBatch]:
        """One send call to ``nic``: its place in the order is taken now; its frames are
        written to a pcap when the call ends (a call that sent none leaves no step)."""
        with self._lock:
            batch = FrameBatch(nic, rate, self._now())
            for other in self._open:
                other.background = True
            if not self.closed:
                self._entries.append(batch)
                self._open.add(batch)
        try:
            yield batch
        finally:
            with self._lock:
                self._settle(batch)

    def _settle(self, batch: FrameBatch) -> None:
        """The batch's step in place of the batch (lock held)."""
        if batch not in self._open:
            return  # closed meanwhile: settled then
        self._open.discard(batch)
        at = self._entries.index(batch)
        if not batch.frames:
            self._entries[at] = None
            return
        digest = hashlib.sha256(
            b"".join(len(f).to_bytes(4, "little") + f for f in batch.frames)
        ).hexdigest()
        pcap = self._pcaps.get(digest)
        if pcap is None:
            pcap = f"{at:03d}-{batch.nic}.pcap"
            with RawPcapWriter(str(self.directory / pcap), linktype=1, sync=False) as w:
                for frame in batch.frames:
                    w.write(frame)
            self._pcaps[digest] = pcap
        self._entries[at] = Frames(
            batch.nic, pcap, len(batch.frames), batch.rate, batch.background, batch.t
        )

    @property
    def steps(self) -> list[Step]:
        """The steps so far, in order (a send call still running is not among them yet)."""
        with self._lock:
            return [e for e in self._entries if e is not None and not isinstance(e, FrameBatch)]

    def close(self) -> JournalFile:
        """No more steps; a send still running is kept with what it sent so far. Writes
        ``journal.json``; what it holds."""
        with self._lock:
            for batch in list(self._open):
                self._settle(batch)
            self.closed = True
        done = JournalFile(self.test, str(self.outdir), self.steps)
        (self.directory / JOURNAL_FILE).write_text(json.dumps(done.to_dict(), indent=2) + "\n")
        return done
