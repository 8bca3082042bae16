"""Emulated NICs: the variants the lab runs, their QEMU arguments and host ends.

Each variant is one receive-allocation pattern NTA has to cover:

- ``e1000``: copybreak 256 (the default): frames up to 256 bytes are copied
  into a napi_alloc_skb buffer, larger ones built over netdev_alloc_frag.
- ``rtl8139``: QEMU's rtl8139 driven by 8139cp, DMA into skbs allocated ahead
  with netdev_alloc_skb.
- ``e1000-cb0``: e1000 with copybreak=0: every frame on the frag path.

8139too cannot stand in for the third: it refuses PCI revision >= 0x20 and
QEMU's rtl8139 is fixed at 0x20. copybreak is module-wide, but e1000 reads
it for every frame it receives and it is writable in sysfs: so the e1000 and
e1000-cb0 NICs share a guest, and the lab sets copybreak for the NIC a test
is using (``Guest.use_nic``), while the other NICs are idle.

Every NIC is backed by a ``-netdev dgram`` over unix sockets: QEMU binds the
guest end, the lab binds the host end, and each datagram is one raw Ethernet
frame. Unix datagram sockets block the sender when QEMU stops reading (the
guest has no free receive descriptor), so the transport itself never drops.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab import InfraError, LabError, UsageError
from lab.records import set_names

if TYPE_CHECKING:
    from lab.journal import FrameBatch, Journal


@dataclass(frozen=True)
class NicVariant:
    name: str
    qemu_device: str
    driver: str  # the guest driver expected to bind
    # Writable driver parameters (/sys/module/<driver>/parameters) this
    # variant needs while it receives; the driver's own values otherwise.
    driver_settings: tuple[tuple[str, str], ...]
    pattern: str  # the receive allocation pattern, for reports
    # Frames/s that exact-count tests inject at. None: the device applies
    # back-pressure (QEMU stops reading the socket when the ring is full), so
    # as fast as it takes them is lossless. QEMU's rtl8139 in C+ mode always
    # claims it can receive, and misses (drops and counts, see
    # LabEnv.settled_rx) when its 64-descriptor ring is full, that is when the
    # guest's vCPU is off the host CPU longer than 64 frames take to arrive.
    # Pacing makes that rare, not impossible: with two TCG guests on this
    # 2-core host, 1000/s missed 57 of 4000 frames, 500/s 40 of 1000 once in
    # three runs, 250/s 50 of 1000 once (in CI).
    lossless_rate: float | None

    @property
    def flow_control(self) -> bool:
        """Whether QEMU holds frames back while the guest's ring is full, rather than drop them."""
        return self.lossless_rate is None


VARIANTS: dict[str, NicVariant] = {
    v.name: v
    for v in (
        NicVariant("e1000", "e1000", "e1000", (), "napi_alloc_skb (<=256 B), frag+build_skb", None),
        NicVariant("rtl8139", "rtl8139", "8139cp", (), "netdev_alloc_skb ahead, DMA", 250.0),
        NicVariant(
            "e1000-cb0", "e1000", "e1000", (("copybreak", "0"),), "frag+build_skb only", None
        ),
    )
}


def variant(name: str) -> NicVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UsageError(f"unknown NIC {name!r}; known: {', '.join(VARIANTS)}") from None


def nic_set(spec: str) -> tuple[NicVariant, ...]:
    """A named set or a comma list of variants."""
    names = set_names(spec)
    if not names:
        raise UsageError("empty NIC set")
    return tuple(variant(n) for n in names)


@dataclass(frozen=True)
class NicPlan:
    """One NIC of one guest: the variant, its MAC and both socket paths."""

    index: int
    variant: NicVariant
    mac: str
    guest_sock: Path  # bound by QEMU
    host_sock: Path  # bound by the lab

    @property
    def netdev_id(self) -> str:
        return f"nic{self.index}"

    # Each NIC of a guest has its own subnet, so replies leave by the NIC asked.
    @property
    def guest_ip(self) -> str:
        return f"10.77.{self.index}.2"

    @property
    def host_ip(self) -> str:
        return f"10.77.{self.index}.1"

    def qemu_args(self) -> list[str]:
        netdev = (
            f"dgram,id={self.netdev_id},local.type=unix,local.path={self.guest_sock},"
            f"remote.type=unix,remote.path={self.host_sock}"
        )
        device = f"{self.variant.qemu_device},netdev={self.netdev_id},mac={self.mac}"
        return ["-netdev", netdev, "-device", device]


def plan(nics: Sequence[NicVariant], sock_dir: Path, guest_no: int = 0) -> list[NicPlan]:
    """MACs are 52:54:00:4e:<guest>:<nic> (QEMU's local range), unique across a run."""
    return [
        NicPlan(
            index=i,
            variant=nic,
            mac=f"52:54:00:4e:{guest_no:02x}:{i:02x}",
            guest_sock=sock_dir / f"g{i}.sock",
            host_sock=sock_dir / f"h{i}.sock",
        )
        for i, nic in enumerate(nics)
    ]


# How long a send may wait for QEMU to read (the guest to free a receive
# buffer) before the lab calls the guest stuck. TCG guests on a loaded host
# pause for seconds; a minute means something is wrong.
SEND_TIMEOUT_S = 60
# Frames the guest sent that the host keeps until a test reads them (the newest).
RECV_KEEP = 100_000


class HostEnd:
    """The host side of one NIC: send frames into the guest, read what it sends.

    Everything the guest sends is read at once by a thread of its own and
    kept (the newest RECV_KEEP frames) until ``recv`` takes it or ``drain``
    drops it. A unix datagram socket queues only a few frames
    (net.unix.max_dgram_qlen), and QEMU, when its send to a full one fails,
    retries at once, for ever: a host end nobody reads would have QEMU's main
    loop spin and the guest crawl (seen here: ICMP errors for the lab's UDP
    frames, unread, cost the guest most of its speed).

    ``send`` is the one way frames reach the guest, so it is where a test's
    journal (``journal``, set by ``LabEnv.test_scope``) records them: every
    sender, threads included, is recorded without asking it to.
    """

    def __init__(self, nic: NicPlan) -> None:
        self.nic = nic
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            nic.host_sock.unlink()
        self.sock.bind(str(nic.host_sock))
        # Large enough that a burst of full-size frames queues rather than blocks early.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # Sends block (back-pressure) but not for ever.
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0)
        )
        self.journal: Journal | None = None
        self._batch = threading.local()  # each sending thread's open send call
        self._got: deque[bytes] = deque(maxlen=RECV_KEEP)
        self._ready = threading.Condition()
        self._closed = threading.Event()
        self._reader = threading.Thread(
            target=self._read, name=f"host-end-{nic.index}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select([self.sock], [], [], 0.2)
                frame = self.sock.recv(65536, socket.MSG_DONTWAIT) if readable else None
            except BlockingIOError:
                continue
            except (OSError, ValueError):  # closed under us
                return
            if frame is not None:
                with self._ready:
                    self._got.append(frame)
                    self._ready.notify_all()

    @contextlib.contextmanager
    def batch(self, rate: float | None) -> Iterator[None]:
        """One send call (``lab.traffic.inject``): the frames this thread sends meanwhile
        are one step of the journal, paced at ``rate``."""
        journal = self.journal
        if journal is None:
            yield
            return
        with journal.frames(self.nic.variant.name, rate) as batch:
            self._batch.open = batch
            try:
                yield
            finally:
                self._batch.open = None

    def send(self, frame: bytes) -> None:
        """Blocks while QEMU is not reading: the guest ran out of receive buffers."""
        try:
            self.sock.sendto(frame, str(self.nic.guest_sock))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise InfraError(f"NIC {self.nic.netdev_id}: QEMU is not listening: {e}") from e
        except BlockingIOError:
            raise LabError(
                f"NIC {self.nic.netdev_id}: the guest took no frame for {SEND_TIMEOUT_S} s"
            ) from None
        self._record(frame)

    def _record(self, frame: bytes) -> None:
        """Into this thread's open send call, else a step of its own."""
        batch: FrameBatch | None = getattr(self._batch, "open", None)
        if batch is not None:
            batch.add(frame)
        elif self.journal is not None:
            with self.journal.frames(self.nic.variant.name, None) as one:
                one.add(frame)

    def recv(self, timeout: float) -> bytes | None:
        """The oldest frame the guest sent that nobody took yet, waiting up to ``timeout``."""
        with self._ready:
            self._ready.wait_for(lambda: bool(self._got), timeout)
            return self._got.popleft() if self._got else None

    def drain(self) -> int:
        """Drop what the guest sent so far (before a new exchange); how many frames."""
        with self._ready:
            n = len(self._got)
            self._got.clear()
            return n

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.nic.host_sock.unlink()


# The source MAC of everything the host injects; the guest gets it as a static
# neighbour, since nothing on the host side answers ARP.
HOST_MAC = "52:54:00:4e:ff:01"


def find_iface_cmd(mac: str, driver: str) -> str:
    """Shell that prints the guest interface with this MAC bound to ``driver``."""
    return (
        "for d in /sys/class/net/*; do "
        f'[ "$(cat $d/address)" = {mac} ] && '
        f'[ "$(basename "$(readlink -f $d/device/driver)")" = {driver} ] && '
        'basename "$d"; done; true'
    )
