"""Options shared by host-only and lab tests: which kernels and NIC sets to boot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab import REPO


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ntalab")
    g.addoption("--kernel", action="append", help="guest kernel(s) (default: debian-6.1)")
    g.addoption("--nic-set", action="append", help="NIC set(s) (default: e1000+rtl8139)")
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
