"""The bench's AF_PACKET reader with a filter, on the host's loopback against the real
kernel: the socket's filter keeps exactly the frames tcpdump's expression passes, and a
frame it refuses never reaches the ring (neither counted nor a drop)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from lab.guestside.protocol import READY_ENV, Afpacket
from lab.guestside.reports import AfpacketReport
from lab.wait import wait_until
from tests.conftest import missing

REPO = Path(__file__).resolve().parents[1]
KEPT, OTHER = 5, 45  # datagrams to the kept port and to another, interleaved
PAYLOAD = 100
FRAME = 14 + 20 + 8 + PAYLOAD  # as loopback's taps see it: Ethernet header of zeros


def test_the_filter_runs_in_the_socket(tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        missing("tcpdump not found: it compiles the filter")
    if os.geteuid() != 0:
        missing("root: an AF_PACKET socket and tcpdump -i lo need it")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        kept_port = sink.getsockname()[1]
        request = Afpacket("lo", KEPT, duration=30, filter=f"udp dst port {kept_port}")
        ready = tmp_path / "ready"
        proc = subprocess.Popen(
            [sys.executable, "-m", request.MODULE, *request.to_argv()],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
            env={**os.environ, READY_ENV: str(ready)},
        )  # fmt: skip
        try:
            wait_until(ready.exists, 30, "the AF_PACKET reader to be ready")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for i in range(KEPT + OTHER):
                    if i % 10 == 0:
                        tx.sendto(bytes(PAYLOAD), ("127.0.0.1", kept_port))
                    else:  # longer, to a port nobody reads: any of them kept shows
                        tx.sendto(bytes(2 * PAYLOAD), ("127.0.0.1", kept_port + 1))
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    got = AfpacketReport.from_json(out)
    assert (got.frames, got.bytes, got.kernel_drops) == (KEPT, KEPT * FRAME, 0), got
