"""The web load's two ends, on the host: the guest's HTTP server and the page fetcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab import bench
from lab.guestside.protocol import READY_ENV, Httpd
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]


def test_every_request_gets_the_whole_page(tmp_path: Path) -> None:
    port = bench.free_loopback_port()
    ready = tmp_path / "ready"
    server = subprocess.Popen(
        [sys.executable, "-m", Httpd.MODULE, *Httpd("127.0.0.1", port).to_argv()],
        cwd=REPO, env={**os.environ, READY_ENV: str(ready)},
    )  # fmt: skip
    try:
        wait_until(
            ready.exists, 30, "httpd", failed=lambda: None if server.poll() is None else "exited"
        )
        assert bench.fetch_pages(port, 40, clients=4).sent == 40
    finally:
        server.kill()
        server.wait()


def test_web_nic_forwards_only_loopback_to_the_guest_server() -> None:
    netdev = bench.web_nic_opts(41234)[1]
    assert "hostfwd=tcp:127.0.0.1:41234-10.77.254.2:8080" in netdev
    assert "restrict=on" in netdev
