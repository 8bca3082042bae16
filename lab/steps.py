"""Steps: the typed entries of a test's journal, and of the reproducer bundle made from it.

A journal (``lab.journal``) lists what a test did to its guest in the order
it did it, recorded where the effects happen, not by the test: frames the
host sent to a NIC (``Frames``), the module loaded, unloaded or a parameter
of it changed (``Load``, ``Unload``, ``Param``), links taken down or up
(``Links``), shell commands (``Command``) and the lab's guest programs
started (``Spawn``). ``lab.repro`` replays them in that order. Standard
library only, and no behaviour: ``tests/test_layers.py`` keeps it a leaf.

Every step carries ``t``, the seconds since the test began, for the reader
of a bundle (replay keeps the order, not the times).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lab import UsageError


@dataclass(frozen=True)
class Frames:
    """One send call's frames to one NIC, in a pcap file of their own.

    ``rate`` is the frames/s the sender paced them at (None: as fast as the NIC
    took them). ``background``: other steps came while these were being sent
    (a sender thread): replay sends them in the background too, so that what
    came meanwhile happens under that traffic again.
    """

    nic: str  # the NIC variant's name (e1000, rtl8139, e1000-cb0)
    pcap: str  # file name, beside the journal
    count: int
    rate: float | None
    background: bool = False
    t: float = 0.0


@dataclass(frozen=True)
class Load:
    module: str  # the build's path (in a bundle: its file name inside the bundle)
    params: str
    t: float = 0.0


@dataclass(frozen=True)
class Unload:
    t: float = 0.0


@dataclass(frozen=True)
class Param:
    name: str
    value: int
    t: float = 0.0


@dataclass(frozen=True)
class Links:
    nics: tuple[str, ...]  # NIC variant names
    up: bool
    t: float = 0.0


@dataclass(frozen=True)
class Command:
    """A shell command (a program left running is a ``Spawn``)."""

    cmd: str
    t: float = 0.0


@dataclass(frozen=True)
class Spawn:
    """One of the lab's guest programs (``python -m module args``), started in the background;
    ``ready``: the test waited for it to say it was ready (``lab.guestside.protocol``)."""

    name: str
    module: str
    args: tuple[str, ...]
    ready: bool = False
    t: float = 0.0


Step = Frames | Load | Unload | Param | Links | Command | Spawn

KINDS: dict[str, type[Step]] = {
    "frames": Frames,
    "load": Load,
    "unload": Unload,
    "param": Param,
    "links": Links,
    "command": Command,
    "spawn": Spawn,
}
_KIND_OF = {cls: kind for kind, cls in KINDS.items()}


def to_dict(step: Step) -> dict[str, Any]:
    return {"kind": _KIND_OF[type(step)], **asdict(step)}


def from_dict(data: dict[str, Any]) -> Step:
    """A step from its JSON; a clear error for a kind or a field this lab does not know."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = KINDS.get(str(kind))
    if cls is None:
        raise UsageError(f"unknown journal step {kind!r}; known: {', '.join(KINDS)}")
    for name in ("nics", "args"):  # tuples in the records, lists in JSON
        if name in fields and isinstance(fields[name], list):
            fields[name] = tuple(fields[name])
    try:
        return cls(**fields)
    except TypeError as e:
        raise UsageError(f"journal step {kind}: {e}") from None


@dataclass(frozen=True)
class JournalFile:
    """``journal.json``: a test's steps, as written when the test ends."""

    test: str
    outdir: str  # the guest's results directory the steps' paths point into
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "outdir": self.outdir, "steps": list(map(to_dict, self.steps))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JournalFile:
        return cls(data["test"], data["outdir"], [from_dict(s) for s in data["steps"]])
