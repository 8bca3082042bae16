"""Options shared by host-only and lab tests (which kernels and NIC sets to boot),
and a local shell that stands in for a guest console."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from lab import REPO
from lab.console import Console


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ntalab")
    g.addoption("--kernel", action="append", help="guest kernel(s) (default: debian-6.1)")
    g.addoption("--nic-set", action="append", help="NIC set(s) or comma lists (default: all)")
    g.addoption(
        "--boot-profile",
        action="append",
        help="kernel command line profile(s) (default: default); tests opt in to others",
    )
    g.addoption("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    g.addoption("--results", help="results directory (default: results/<timestamp>)")


@pytest.fixture(scope="session")
def results_dir(pytestconfig: pytest.Config) -> Path:
    given = pytestconfig.getoption("--results")
    out = Path(given) if given else REPO / "results" / time.strftime("%Y%m%d-%H%M%S")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def console() -> Iterator[Console]:
    """The console protocol on a real local bash on a pty: a guest without the guest."""
    child = pexpect.spawn(
        "bash", ["--norc", "--noprofile", "-i"], encoding="utf-8", env={"PS1": "# ", "TERM": "dumb"}
    )
    child.expect(r"[#$] $", timeout=10)
    log = io.StringIO()
    child.logfile_read = log
    con = Console(child, log)
    # A guest shell may not allow dmesg -n: the setup line must not depend on it.
    con.setup(timeout=10)
    yield con
    child.close(force=True)
