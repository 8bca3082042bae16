"""What the lab and its guest programs say to each other: typed requests and readiness.

Standard library only, imported on both sides, as the reports beside it
(``reports.py``): a program's request is a frozen dataclass the host turns
into argv (``to_argv``) and the program reads back (``from_argv``), so a
field cannot change on one side only and no call site spells argv by
position.

**Readiness** has one protocol, the kernel net selftests' ``KSFT_READY_FD``
made a file: a program the lab starts with ``env.bkg(request, ready=True)``
finds ``$NTALAB_READY`` naming a file in the guest's results directory (the
host sees it through the shared filesystem), and calls ``ready()`` once it
can be given work (attached, bound, listening). Run by hand, without the
variable, ``ready()`` does nothing. pysniff's ``--ready-file`` defaults to
the same variable; a program that cannot call ``ready()`` (tcpdump, ntadump)
runs under ``execute`` with ``ready_line``: its own signal, a line on its
stderr, turned into the same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

# The environment variable naming a program's ready file (pysniff/cli.py reads it too).
READY_ENV = "NTALAB_READY"

# Seconds without a frame after which a reader or capture waiting for more stops
# short (a NIC without flow control missed the rest), and how long one waits for
# its first (the link bounce after a reader attaches comes first). Neither is
# paid when all goes well: given a count, a reader stops at its last frame.
IDLE_S = 3.0
FIRST_FRAME_S = 60.0


def write_whole(path: str, text: str) -> None:
    """Written under another name, then renamed: a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def ready() -> None:
    """Tell the lab this program can be given work (nothing when it was not asked)."""
    path = os.environ.get(READY_ENV)
    if path:
        write_whole(path, f"{os.getpid()}\n")


def without_ready(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a program's own children: the ready file is the program's."""
    out = dict(os.environ if env is None else env)
    out.pop(READY_ENV, None)
    return out


# -- requests -------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base(hint: Any) -> tuple[Any, bool]:
    """A field's value type, and whether it may be None (``int | None``)."""
    args = typing.get_args(hint)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


class Request:
    """A guest program's request: its module, and its fields as ``--field value`` options.

    Subclasses are frozen dataclasses of str, int, float, Path and bool fields
    (``X | None`` for an optional one; a bool is a flag), and at most one
    ``tuple[str, ...]`` field, the command after ``--``.
    """

    MODULE: ClassVar[str]

    def to_argv(self) -> list[str]:
        argv: list[str] = []
        tail: list[str] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                tail = ["--", *value] if value else []
            elif value is True:
                argv.append(_flag(f.name))
            elif value is not None and value is not False:
                argv += [_flag(f.name), str(value)]
        return argv + tail

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=f"python -m {cls.MODULE}", description=cls.__doc__)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind, optional = _base(hints[f.name])
            has_default = f.default is not dataclasses.MISSING
            if typing.get_origin(kind) is tuple:
                p.add_argument(f.name, nargs=argparse.REMAINDER)
            elif kind is bool:
                p.add_argument(_flag(f.name), dest=f.name, action="store_true")
            else:
                p.add_argument(
                    _flag(f.name), dest=f.name, type=kind, required=not (has_default or optional),
                    default=f.default if has_default else None,
                )  # fmt: skip
        return p

    @classmethod
    def from_argv(cls, argv: list[str]) -> Self:
        """The request ``to_argv`` gave; bad argv exits 2 with argparse's message."""
        values = vars(cls.parser().parse_args(argv))
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = values.get(f.name)
            if isinstance(value, list):  # the command after ``--``: only that one dropped
                values[f.name] = tuple(value[1:] if value[:1] == ["--"] else value)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Capture(Request):
    """Capture IFACE with AF_PACKET: COUNT frames of RUN_ID, each checked (a CaptureReport)."""

    MODULE = "lab.guestside.capture"
    iface: str
    run_id: int
    count: int
    timeout: float = 120.0


@dataclasses.dataclass(frozen=True)
class Afpacket(Request):
    """Read IFACE through a TPACKET_V3 ring: COUNT frames, or for DURATION s (an AfpacketReport);
    with FILTER, only frames that tcpdump expression passes, filtered in the kernel."""

    MODULE = "lab.guestside.afpacket"
    iface: str
    count: int
    duration: float = 120.0
    filter: str = ""


@dataclasses.dataclass(frozen=True)
class UdpEcho(Request):
    """Echo COUNT UDP datagrams on ADDRESS:PORT; print how many it echoed."""

    MODULE = "lab.guestside.udpecho"
    address: str
    port: int
    count: int


@dataclasses.dataclass(frozen=True)
class TcpListen(Request):
    """A TCP socket listening on ADDRESS:PORT, never accepting, until stopped."""

    MODULE = "lab.guestside.tcplisten"
    address: str
    port: int


@dataclasses.dataclass(frozen=True)
class UdpSink(Request):
    """COUNT UDP sockets from FIRST_PORT up that never read, until SIGTERM (a SinkReport)."""

    MODULE = "lab.guestside.udpsink"
    address: str
    first_port: int
    count: int


@dataclasses.dataclass(frozen=True)
class PoolScan(Request):
    """A reader on IFACE that reads FRAMES, then searches its whole pool (a ScanReport)."""

    MODULE = "lab.guestside.poolscan"
    iface: str
    marker_hex: str  # bytes only another reader's device receives
    frames: int
    other: str  # an interface it does not attach, whose counters it asks for


@dataclasses.dataclass(frozen=True)
class Scribble(Request):
    """A reader on IFACE writing garbage over its ring for SECONDS (a ScribbleReport)."""

    MODULE = "lab.guestside.scribbler"
    iface: str
    seconds: float
    seed: int


@dataclasses.dataclass(frozen=True)
class WakeProbe(Request):
    """A reader on IFACE that waits for NTA_COMMIT_NEED_WAKEUP (a WakeProbeReport); it creates
    STARVED once it committed what it held, when the host is to send more."""

    MODULE = "lab.guestside.wakeprobe"
    iface: str
    starved: Path


@dataclasses.dataclass(frozen=True)
class Lifecycle(Request):
    """One reader on IFACE through CYCLES attach/detach cycles, detaching, and GOING's deletion,
    in steps handed over with the host through files in STEPS (a LifecycleReport)."""

    MODULE = "lab.guestside.lifecycle"
    iface: str
    cycles: int
    going: str
    steps: Path


@dataclasses.dataclass(frozen=True)
class Httpd(Request):
    """An HTTP server on ADDRESS:PORT answering every GET with an 8 KiB page, until killed."""

    MODULE = "lab.guestside.httpd"
    address: str
    port: int


@dataclasses.dataclass(frozen=True)
class Meter(Request):
    """The benchmark's meter around a sniffer (a MeterReport); see lab.guestside.meter.

    The sniffer is CMD executed, or MODULE forked from the meter's warm
    interpreter with CMD its arguments; none: the window alone. It says it is
    ready through this protocol (the meter gives it a ready file of its own),
    or, with WAIT_LINE, by that line on its stderr. With COPIES, that many
    copies of it run at once (several readers of one device), measured together.
    """

    MODULE = "lab.guestside.meter"
    hold: Path | None = None  # wait for SIGUSR1 before the window, then create this
    iface: str | None = None  # the NIC whose received frames the window counts
    # SIGTERM says the load is over: the window then ends once IFACE has taken this many
    # frames in it (received or missed) and its counters stood still ...
    expect_rx: int = 0
    # ... and once the sniffer has exited, given this long to do so on its own (its
    # batching delay) before it is stopped (with EXPECT_RX only: else the host waited)
    drain_s: float = 0.0
    wait_line: str | None = None  # the sniffer is ready at this line on its stderr
    module: str | None = None  # a Python sniffer, forked warm: CMD is its arguments
    copies: int = 1  # copies of the sniffer started, all ready before the window opens
    tracefs: Path | None = None  # where tracefs is (None: /sys/kernel/tracing); host tests
    net: Path | None = None  # where the NICs' statistics are (None: /sys/class/net); host tests
    cmd: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Execute(Request):
    """Run CMD (a native program: tcpdump, ntadump, a shell loop) as the spawner's child.

    With ``ready_line``, ready once that line is on its stderr (copied to
    this program's stderr all along).
    """

    MODULE = "lab.guestside.execute"
    ready_line: str | None = None
    cmd: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TcpSink(Request):
    """A TCP server on ADDRESS:PORT reading every connection to its end, until killed (the
    benchmark's bulk load)."""

    MODULE = "lab.guestside.tcpsink"
    address: str
    port: int


@dataclasses.dataclass(frozen=True)
class BadFilter(Request):
    """Malformed filters and directions to the ioctl, then IFACE attached until COUNT frames
    were filtered (a BadFilterReport)."""

    MODULE = "lab.guestside.badfilter"
    iface: str
    count: int
