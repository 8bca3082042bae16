"""Progress events: what a guest's scenario run is doing, for a person to follow live.

The pytest process driving a guest appends one JSON line per event to its
``events.jsonl``; ``ntalab run`` follows every guest's file and prints a line
per event with the elapsed time, so progress reads the same on a terminal
and in a CI log. ``ntalab bench`` drives its guest in its own process: its
log also hands each event to the same printer as it is written (``echo``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from lab.records import EventKind


@dataclass(frozen=True)
class Event:
    t: float  # time.time()
    guest: str
    kind: EventKind
    test: str = ""
    nic: str = ""
    outcome: str = ""  # a test's or a guest's Outcome; a boot retried: its BootOutcome
    detail: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**{**data, "kind": EventKind(data["kind"])})


class EventLog:
    """Appends events to a file, a line each, flushed at once."""

    def __init__(self, path: Path, guest: str, echo: Callable[[Event], None] | None = None) -> None:
        self.path = path
        self.guest = guest
        self.echo = echo
        self._file: TextIO = path.open("a", encoding="utf-8")

    def __call__(self, kind: EventKind, **fields: str) -> None:
        event = Event(time.time(), self.guest, kind, **fields)
        self._file.write(json.dumps(asdict(event)) + "\n")
        self._file.flush()
        if self.echo is not None:
            self.echo(event)

    def close(self) -> None:
        self._file.close()


class EventTail:
    """Reads the events appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""

    def new(self) -> list[Event]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            f.seek(self._offset)
            text = f.read()
            self._offset = f.tell()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        return [Event.from_dict(json.loads(line)) for line in lines if line]
