"""The loads a sniffer meets, each driven from the host; one load runs through all its rounds.

- ``FrameLoad``: UDP frames injected into the lab's e1000 at a fixed rate
  (``fixed``: 2000/s, mixed sizes; ``fixed-64``, ``fixed-512``,
  ``fixed-1514``: the frame-size sweep; ``filtered``: ``fixed`` with a
  filter keeping 1 frame in 10; ``two-readers``: ``fixed`` captured by two
  copies of each sniffer at once) or as fast as the NIC takes them
  (``max``: e1000's back-pressure).
- ``WebLoad``: a small HTTP server in the guest answering 8 KiB pages to 8
  host clients, a connection per request (the seed's httperf run).
- ``BulkLoad``: a bulk TCP download into the guest, several connections at
  once, big writes, with GRO on (the kernel's default on every real NIC,
  turned off for every other load and test): each connection's segments are
  merged into frames of up to 64 KiB before anything sees them.

The web and bulk loads (``ServedLoad``: a guest program serving a port,
warmed up, then driven by host clients) reach the guest through a second
e1000 on QEMU's user-mode network (``UserNet``), whose only traffic is loopback ports of the
host QEMU forwards to the guest. ``restrict=on`` keeps the guest from
reaching anything, the host included, except through those forwards; so the
bulk load's sender connects from the host (its data flows into the guest as
a download's does) rather than the guest connecting out to the host.
"""

from __future__ import annotations

import abc
import contextlib
import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Protocol

from lab import LabError, traffic
from lab.guestnet import GuestNic, Link
from lab.guestside.protocol import Httpd, Request, TcpSink
from lab.testbed import Testbed

# After a load that sniffers cannot count (web, bulk), before they are stopped:
# longer than any sniffer's batching delay (libpcap's block timeout in tcpdump
# is 1 s, NTA's default wakeup 200 ms), so each has taken every frame.
SETTLE_S = 1.5


class Nic(Enum):
    """The NIC a load arrives on."""

    LAB = "lab"  # the lab's e1000: frames injected through its host end
    USER = "user"  # the e1000 on QEMU's user-mode network: forwarded loopback ports


@dataclass(frozen=True)
class Sent:
    """What a load did in one trial, in its own unit."""

    count: int
    unit: str  # frames, requests, bytes
    seconds: float


Drive = Callable[[], Sent]


class Load(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def nic(self) -> Nic: ...

    @property
    def frames(self) -> int | None:
        """Frames each trial sends (None: a load sniffers cannot count)."""
        ...

    @property
    def guest_port(self) -> int | None:
        """The guest TCP port the user-mode network forwards to it, if any."""
        ...

    @property
    def filter(self) -> str | None:
        """The capture filter every sniffer of this load runs (a tcpdump expression)."""
        ...

    @property
    def kept(self) -> int | None:
        """Frames of a trial the filter keeps, which sniffers stop at (None: they run until
        stopped)."""
        ...

    @property
    def readers(self) -> int:
        """Copies of each sniffer that capture the load at once, on the same NIC."""
        ...

    def describe(self) -> str: ...

    def running(
        self, env: Testbed, nic: Link, host_port: int | None
    ) -> contextlib.AbstractContextManager[Drive]:
        """Its guest side set up for all its rounds; the function that makes one trial's load."""
        ...


# -- the user-mode network --------------------------------------------------------------------

USER_MAC = "52:54:00:4e:fe:00"
USER_NET = "10.77.254"
USER_GUEST_IP = f"{USER_NET}.2"


@dataclass(frozen=True)
class UserNet:
    """An e1000 on QEMU's user-mode network: only forwarded host loopback ports reach it."""

    forwards: tuple[tuple[int, int], ...]  # (guest port, host loopback port)

    @classmethod
    def plan(cls, guest_ports: Iterable[int]) -> UserNet:
        return cls(tuple((port, free_loopback_port()) for port in guest_ports))

    def host_port(self, guest_port: int) -> int:
        return dict(self.forwards)[guest_port]

    def qemu_opts(self) -> tuple[str, ...]:
        fwd = "".join(
            f",hostfwd=tcp:127.0.0.1:{host}-{USER_GUEST_IP}:{guest}"
            for guest, host in self.forwards
        )
        netdev = f"user,id=user,net={USER_NET}.0/24,host={USER_NET}.1,restrict=on{fwd}"
        return ("-netdev", netdev, "-device", f"e1000,netdev=user,mac={USER_MAC}")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- frames injected ----------------------------------------------------------------------------

DISTINCT = 1000  # frames built per load, sent over again: load, not a delivery check
DISCARD_PORT = 9  # where the frames go: the guest's stack drops them quietly
KEPT_PORT = 10  # where the frames a filtered load's filter keeps go (closed as well)


@dataclass(frozen=True)
class FrameLoad:
    """``frames`` UDP frames per trial at ``rate`` (None: as fast as the NIC takes them),
    of ``size`` bytes (None: random sizes, 60..1514); with ``keep_one_in`` N > 1, every
    Nth frame goes to another port and every sniffer runs a filter that keeps just those
    (tcpdump's and AF_PACKET's run in the socket, NTA's in its tap); with ``readers``
    N > 1, N copies of each sniffer capture every frame at once (NTA: N readers of the
    device, sharing its pool; AF_PACKET: N sockets, each copying every frame)."""

    name: str
    frames: int
    rate: float | None
    size: int | None = None
    keep_one_in: int = 1
    readers: int = 1
    nic: Nic = Nic.LAB
    guest_port: int | None = None

    def __post_init__(self) -> None:
        # Every Nth of the distinct frames, sent over again: N must divide them for the
        # kept count to be exact.
        if self.keep_one_in < 1 or DISTINCT % self.keep_one_in:
            raise LabError(f"load {self.name}: keep_one_in {self.keep_one_in} does not divide "
                           f"{DISTINCT}")  # fmt: skip
        if self.readers < 1:
            raise LabError(f"load {self.name}: {self.readers} readers: one or more")

    @property
    def filter(self) -> str | None:
        return f"udp dst port {KEPT_PORT}" if self.keep_one_in > 1 else None

    @property
    def kept(self) -> int:
        return -(-self.frames // self.keep_one_in)  # frames 0, N, 2N, ...

    def describe(self) -> str:
        rate = f"{self.rate:.0f}/s" if self.rate else "as fast as the NIC takes them"
        size = f"{self.size} B" if self.size else "60..1514 B"
        kept = f", a filter keeping 1 in {self.keep_one_in}" if self.keep_one_in > 1 else ""
        copies = f", {self.readers} copies of each sniffer at once" if self.readers > 1 else ""
        return f"{self.frames} UDP frames of {size} at {rate}{kept}{copies}"

    @contextlib.contextmanager
    def running(self, env: Testbed, nic: Link, host_port: int | None) -> Iterator[Drive]:
        if not isinstance(nic, GuestNic):
            raise LabError(f"load {self.name}: frames are injected into a lab NIC, not {nic.name}")
        sizes = (self.size,) if self.size else None
        addrs = traffic.Addresses(nic.mac, nic.guest_ip, nic.host_ip)
        ports = (KEPT_PORT,) + (DISCARD_PORT,) * (self.keep_one_in - 1)
        distinct = traffic.filler(addrs, min(self.frames, DISTINCT), sizes, seed=1, dports=ports)
        batch = (distinct * (self.frames // len(distinct) + 1))[: self.frames]

        def drive() -> Sent:
            done = env.send(nic, batch, self.rate)
            return Sent(done.sent, "frames", done.elapsed)

        yield drive


# -- served from the guest: web and bulk --------------------------------------------------------


class ServedLoad(abc.ABC):
    """A load on the user-mode network: a guest program (``server``) serving ``guest_port``,
    which host clients reach through its forwarded loopback port. Sniffers cannot count
    its frames (``frames`` None): they run until stopped."""

    name: ClassVar[str]
    guest_port: ClassVar[int]
    nic: ClassVar[Nic] = Nic.USER
    frames: ClassVar[int | None] = None
    filter: ClassVar[str | None] = None
    kept: ClassVar[int | None] = None
    readers: ClassVar[int] = 1

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def server(self, nic: Link) -> Request:
        """The guest program's request, serving on ``nic``."""

    @abc.abstractmethod
    def warm_up(self, host_port: int) -> None:
        """A little of the load, before anything is measured: slirp's connection set-up and
        the guest's ARP entry for it; a LabError if the server does not answer."""

    @abc.abstractmethod
    def drive(self, host_port: int) -> Sent:
        """One trial's load; a LabError if some of it failed."""

    def nic_set_up(self, env: Testbed, nic: Link) -> contextlib.AbstractContextManager[None]:
        """What the NIC needs for this load while it runs (nothing, unless said)."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def running(self, env: Testbed, nic: Link, host_port: int | None) -> Iterator[Drive]:
        assert host_port is not None
        request = self.server(nic)
        program = request.MODULE.rsplit(".", 1)[-1]
        with self.nic_set_up(env, nic), env.start(program, request, ready=True) as server:
            server.wait_ready()
            self.warm_up(host_port)
            yield lambda: self.drive(host_port)


# -- the web server -------------------------------------------------------------------------------

WEB_PORT = 8080
WEB_CLIENTS = 8
PAGE = 8192  # lab.guestside.httpd's page


@dataclass(frozen=True)
class WebLoad(ServedLoad):
    """``requests`` GETs of an 8 KiB page per trial, ``clients`` at a time."""

    requests: int
    clients: int = WEB_CLIENTS
    name = "web"
    guest_port = WEB_PORT

    def describe(self) -> str:
        return f"{self.requests} HTTP requests for 8 KiB, {self.clients} clients, a connection each"

    def server(self, nic: Link) -> Request:
        return Httpd(nic.guest_ip, WEB_PORT)

    def warm_up(self, host_port: int) -> None:
        if fetch_pages(host_port, 1).count != 1:
            raise LabError(f"the guest's HTTP server does not answer on 127.0.0.1:{host_port}")

    def drive(self, host_port: int) -> Sent:
        done = fetch_pages(host_port, self.requests, self.clients)
        if done.count < self.requests:
            raise LabError(f"web: {self.requests - done.count} requests failed")
        return done


def fetch_pages(port: int, requests: int, clients: int = WEB_CLIENTS) -> Sent:
    """``requests`` GETs over ``clients`` connections at a time, one connection each; the
    requests answered with the whole page."""
    left = iter(range(requests))
    lock = threading.Lock()
    done = 0
    errors: Counter[str] = Counter()

    def client() -> None:
        nonlocal done
        while True:
            with lock:
                if next(left, None) is None:
                    return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/")
                body = conn.getresponse().read()
            except OSError as err:  # counted as not done
                with lock:
                    errors[type(err).__name__] += 1
                continue
            finally:
                conn.close()
            if len(body) == PAGE:
                with lock:
                    done += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Sent(done, "requests", time.monotonic() - start)


# -- the bulk download ------------------------------------------------------------------------

BULK_PORT = 8081
BULK_CONNECTIONS = 4
WRITE = 1 << 18  # bytes per send: big writes, full-sized segments


@dataclass(frozen=True)
class BulkLoad(ServedLoad):
    """``mib`` MiB per trial into the guest over ``connections`` TCP connections at once,
    GRO on for the NIC meanwhile."""

    mib: int
    connections: int = BULK_CONNECTIONS
    name = "bulk"
    guest_port = BULK_PORT

    def describe(self) -> str:
        return f"{self.mib} MiB downloaded over {self.connections} TCP connections, GRO on"

    def server(self, nic: Link) -> Request:
        return TcpSink(nic.guest_ip, BULK_PORT)

    @contextlib.contextmanager
    def nic_set_up(self, env: Testbed, nic: Link) -> Iterator[None]:
        env.net.set_gro(nic, True)
        try:
            yield
        finally:
            env.net.set_gro(nic, False)

    def warm_up(self, host_port: int) -> None:
        push(host_port, 1 << 16, 1)

    def drive(self, host_port: int) -> Sent:
        return push(host_port, self.mib * (1 << 20) // self.connections, self.connections)


def push(port: int, each: int, connections: int) -> Sent:
    """``each`` bytes over each of ``connections`` connections at once; returns once the
    guest's sink has read them all (it closes a connection at its end)."""
    errors: list[str] = []
    data = memoryview(bytes(WRITE))

    def send() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                left = each
                while left > 0:
                    left -= s.send(data[: min(left, WRITE)])
                s.shutdown(socket.SHUT_WR)
                if s.recv(1):  # the sink never writes: b"" once it closed
                    errors.append("the sink answered")
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e}")

    start = time.monotonic()
    threads = [threading.Thread(target=send) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise LabError(f"bulk: {len(errors)} of {connections} connections failed: {errors[0]}")
    return Sent(each * connections, "bytes", time.monotonic() - start)
