"""What ``pysniff --json`` reports: one typed object, the same on both sides of the wire.

The lab runs pysniff in guests and reads this report back on the host with
``SniffReport.from_json``; both sides use these classes, so a field cannot
be renamed on one side only. Standard library only (it runs in guests).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pysniff.abi import DevStats, ReaderStats, Stats
from pysniff.signature import TallySummary


@dataclass(frozen=True)
class SniffReport:
    frames: int
    bytes: int
    per_interface: dict[str, int]
    committed: int
    refused: int
    pending: int
    crc_sum: int
    # The longest a frame waited, from its receipt to this reader (frame path only).
    max_wait_us: int
    elapsed_s: float
    syscalls: int  # poll, write, ioctl calls while capturing
    stats_before: Stats
    stats_after: Stats
    reader: ReaderStats
    # Per interface: what the module counted for this reader, received and missed.
    dev_stats: dict[str, DevStats] = field(default_factory=dict)
    bad_commits_sent: dict[str, int] = field(default_factory=dict)
    bad_commits_refused: dict[str, int] = field(default_factory=dict)
    verify: TallySummary | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # frames not read, by fault
    gone: bool = False  # every interface went away: the capture ended (exit status 1)
    output_error: str | None = None  # why the output could not be written (exit status 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SniffReport:
        data: dict[str, Any] = json.loads(text)
        data["stats_before"] = Stats.from_dict(data["stats_before"])
        data["stats_after"] = Stats.from_dict(data["stats_after"])
        data["reader"] = ReaderStats(**data["reader"])
        data["dev_stats"] = {k: DevStats(**v) for k, v in data["dev_stats"].items()}
        if data["verify"] is not None:
            data["verify"] = TallySummary.from_dict(data["verify"])
        return cls(**data)

    def missed(self, iface: str) -> int:
        """Frames ``iface`` received that this reader did not get."""
        d = self.dev_stats.get(iface)
        return sum(d.missed.values()) if d else 0
