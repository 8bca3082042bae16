"""What a scenario imports, from one place: the door, frames, checks, requests and reports.

A lab scenario (``tests/lab/``) imports the lab through this module only,
and reaches its guest only through the ``LabEnv`` its fixture hands it
(``lab_env``, or ``nta_env`` with NTA loaded): every change it makes there
undoes itself. ``docs/writing-scenarios.md`` walks through one;
``tests/test_scenario_door.py`` holds the scenarios to this module (and
keeps them from the senders that bypass the door, ``traffic.inject`` and
``traffic.converse``).
"""

from __future__ import annotations

from lab import checks, kbuild, paths, traffic
from lab.guestnet import GuestNic
from lab.guestside.protocol import (
    FIRST_FRAME_S,
    IDLE_S,
    Afpacket,
    BadFilter,
    Execute,
    Lifecycle,
    PoolScan,
    Scribble,
    TcpListen,
    UdpEcho,
    UdpSink,
    WakeProbe,
)
from lab.guestside.reports import (
    AfpacketReport,
    BadFilterReport,
    CaptureReport,
    LifecycleReport,
    NtadumpIface,
    NtadumpReport,
    ScanReport,
    ScribbleReport,
    SinkReport,
    WakeProbeReport,
)
from lab.labenv import KernelModule, LabEnv, ModuleHandle, Pace
from lab.nta import DEBUGFS
from lab.pytest_plugin import KMEMLEAK, Figure
from lab.records import RxCounts
from lab.spawn import GuestProc
from lab.wait import wait_until
from pysniff import signature
from pysniff.abi import DevStats, Stats
from pysniff.report import SniffReport

__all__ = [
    "DEBUGFS",
    "FIRST_FRAME_S",
    "IDLE_S",
    "KMEMLEAK",
    "Afpacket",
    "AfpacketReport",
    "BadFilter",
    "BadFilterReport",
    "CaptureReport",
    "DevStats",
    "Execute",
    "Figure",
    "GuestNic",
    "GuestProc",
    "KernelModule",
    "LabEnv",
    "Lifecycle",
    "LifecycleReport",
    "ModuleHandle",
    "NtadumpIface",
    "NtadumpReport",
    "Pace",
    "PoolScan",
    "RxCounts",
    "ScanReport",
    "Scribble",
    "ScribbleReport",
    "SinkReport",
    "SniffReport",
    "Stats",
    "TcpListen",
    "UdpEcho",
    "UdpSink",
    "WakeProbe",
    "WakeProbeReport",
    "checks",
    "kbuild",
    "paths",
    "signature",
    "traffic",
    "wait_until",
]
