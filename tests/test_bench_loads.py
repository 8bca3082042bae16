"""The bench's loads on the host: the guest-side servers run here, on loopback, against
the drivers the host uses; the user-mode network's QEMU arguments."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from lab import LabError, nics, traffic
from lab.bench import loads
from lab.bench.loads import USER_MAC, BulkLoad, FrameLoad, ServedLoad, UserNet, WebLoad
from lab.guestnet import GuestNic, Link, UserNic
from lab.guestside.protocol import READY_ENV, Httpd, Request, TcpSink
from lab.testbed import Testbed
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]


Start = Callable[[Callable[[str, int], Request]], int]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Start]:
    """Starts a guest-side server on host loopback, from its request for an address and
    port, as the lab starts it (ready through the protocol): ``server(Httpd)`` -> port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(request: Callable[[str, int], Request]) -> int:
        port = loads.free_loopback_port()
        req = request("127.0.0.1", port)
        ready = tmp_path / f"ready-{req.MODULE}"
        proc = subprocess.Popen(
            [sys.executable, "-m", req.MODULE, *req.to_argv()],
            cwd=REPO, env={**os.environ, READY_ENV: str(ready)},
        )  # fmt: skip
        procs.append(proc)
        wait_until(
            ready.exists, 30, req.MODULE, failed=lambda: None if proc.poll() is None else "exited"
        )
        return port

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_every_request_gets_the_whole_page(server: Start) -> None:
    port = server(Httpd)
    done = loads.fetch_pages(port, 40, clients=4)
    assert (done.count, done.unit) == (40, "requests")


def test_the_bulk_sender_returns_once_the_sink_read_every_byte(server: Start) -> None:
    port = server(TcpSink)
    done = loads.push(port, 3 * (1 << 20) + 17, 3)
    assert (done.count, done.unit) == (3 * (3 * (1 << 20) + 17), "bytes")


def test_a_bulk_connection_refused_is_an_error() -> None:
    port = loads.free_loopback_port()  # nothing listens there
    with pytest.raises(LabError, match="bulk: 2 of 2 connections failed: ConnectionRefusedError"):
        loads.push(port, 100, 2)


def test_the_user_network_forwards_only_host_loopback_ports() -> None:
    net = UserNet(((8080, 41234), (8081, 41235)))
    opts = net.qemu_opts()
    assert opts[0] == "-netdev" and opts[2] == "-device"
    netdev = opts[1]
    assert "restrict=on" in netdev  # the guest reaches nothing, the host included
    assert "hostfwd=tcp:127.0.0.1:41234-10.77.254.2:8080" in netdev
    assert "hostfwd=tcp:127.0.0.1:41235-10.77.254.2:8081" in netdev
    assert netdev.count("hostfwd=") == 2 and "guestfwd" not in netdev
    assert opts[3] == f"e1000,netdev=user,mac={loads.USER_MAC}"
    assert net.host_port(8081) == 41235
    planned = UserNet.plan([8080, 8081])
    assert [g for g, _ in planned.forwards] == [8080, 8081]


def test_load_shapes() -> None:
    sweep = FrameLoad("fixed-64", 10000, 2000.0, 64)
    assert sweep.describe() == "10000 UDP frames of 64 B at 2000/s"
    assert FrameLoad("max", 60000, None).describe().endswith("as fast as the NIC takes them")
    assert (sweep.frames, sweep.guest_port) == (10000, None)
    assert (WebLoad(600).frames, WebLoad(600).guest_port) == (None, loads.WEB_PORT)
    bulk = BulkLoad(24)
    assert (bulk.frames, bulk.guest_port, bulk.connections) == (None, loads.BULK_PORT, 4)
    assert bulk.describe() == "24 MiB downloaded over 4 TCP connections, GRO on"
    sizes = {len(f) for f in traffic.filler(traffic.Addresses("52:54:00:4e:00:00"), 50, (64,))}
    assert sizes == {64}
    with pytest.raises(LabError, match=r"frame size 41 outside 42\.\.1514"):
        traffic.filler(traffic.Addresses("52:54:00:4e:00:00"), 1, (41,))


def test_a_filtered_load_keeps_exactly_one_frame_in_n() -> None:
    plain = FrameLoad("fixed", 2500, 2000.0)
    assert (plain.filter, plain.kept) == (None, 2500)
    thin = FrameLoad("filtered", 2500, 2000.0, keep_one_in=10)
    assert (thin.filter, thin.kept) == ("udp dst port 10", 250)
    assert thin.describe().endswith("at 2000/s, a filter keeping 1 in 10")
    assert FrameLoad("f", 2501, 2000.0, keep_one_in=10).kept == 251  # frame 2500 is kept
    with pytest.raises(LabError, match="keep_one_in 7 does not divide 1000"):
        FrameLoad("f", 100, 2000.0, keep_one_in=7)
    frames = traffic.filler(traffic.Addresses("52:54:00:4e:00:00"), 30, dports=(10, 9, 9))
    assert [Ether(f)[UDP].dport for f in frames] == [10, 9, 9] * 10
    assert (WebLoad(1).filter, WebLoad(1).kept, BulkLoad(1).kept) == (None, None, None)


def test_a_load_of_two_readers_is_the_same_frames_for_two_copies() -> None:
    two = FrameLoad("two-readers", 2500, 2000.0, readers=2)
    assert (two.filter, two.kept, two.readers) == (None, 2500, 2)
    assert two.describe() == (
        "2500 UDP frames of 60..1514 B at 2000/s, 2 copies of each sniffer at once"
    )
    assert (FrameLoad("fixed", 1, 1.0).readers, WebLoad(1).readers, BulkLoad(1).readers) == (
        1, 1, 1,
    )  # fmt: skip
    with pytest.raises(LabError, match="load r: 0 readers: one or more"):
        FrameLoad("r", 100, 2000.0, readers=0)


def test_the_sent_batch_keeps_one_in_n_however_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch a trial sends: the distinct frames over again, every Nth to the kept port;
    exactly ``kept`` of them, as the sniffers' -c says."""
    sent: list[bytes] = []

    class Bed:
        def send(self, nic: object, batch: list[bytes], rate: float | None) -> object:
            sent.extend(batch)
            return SimpleNamespace(sent=len(batch), elapsed=1.0)

    nic = GuestNic(nics.variant("e1000"), "eth1", "52:54:00:4e:00:00", "10.77.0.2", "10.77.0.1", 0)
    load = FrameLoad("filtered", 2345, 2000.0, keep_one_in=10)
    with load.running(cast(Testbed, Bed()), nic, None) as drive:
        assert drive().count == 2345
    kept = [i for i, f in enumerate(sent) if Ether(f)[UDP].dport == loads.KEPT_PORT]
    assert kept == list(range(0, 2345, 10)) and len(kept) == load.kept


class FakeBed:
    """What a served load's ``running`` uses of the Testbed: ``start`` runs the guest
    program here, on loopback at ``port`` (the host port too: no QEMU forwards it), and
    ``net.set_gro`` is recorded."""

    def __init__(self, start: Start, port: int) -> None:
        self._start, self.port = start, port
        self.started: list[str] = []
        self.gro: list[bool] = []
        self.net = self

    def set_gro(self, nic: Link, on: bool) -> None:
        self.gro.append(on)

    @contextlib.contextmanager
    def start(self, name: str, request: Request, ready: bool = False) -> Iterator[FakeBed]:
        assert ready
        self.started.append(name)
        served = cast(Httpd | TcpSink, request)
        self._start(lambda address, _: replace(served, address=address, port=self.port))
        yield self

    def wait_ready(self) -> None:
        """``start`` returned once the program was ready."""


NIC = UserNic("eth1", USER_MAC, "127.0.0.1")


@pytest.mark.parametrize(
    ("load", "program", "sent", "gro"),
    [(WebLoad(12, clients=3), "httpd", (12, "requests"), []),
     (BulkLoad(2, connections=2), "tcpsink", (2 << 20, "bytes"), [True])],
    ids=["web", "bulk"],
)  # fmt: skip
def test_a_served_load_runs_its_program_warms_up_and_drives(
    load: ServedLoad, program: str, sent: tuple[int, str], gro: list[bool], server: Start
) -> None:
    bed = FakeBed(server, loads.free_loopback_port())
    with load.running(cast(Testbed, bed), NIC, bed.port) as drive:
        assert bed.gro == gro  # the NIC set up for the load while it runs, and only then
        done = drive()
    assert bed.started == [program]
    assert (done.count, done.unit) == sent
    assert bed.gro == [*gro, *(False for _ in gro)]
