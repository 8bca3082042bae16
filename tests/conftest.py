"""Host tests, and the lab scenarios under tests/lab, which run under lab.pytest_plugin
(one guest per pytest process: see that module)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pexpect
import pytest

from lab.console import Console

# tests.fakenta: ntadump on a fake module, its builds shared by the modules testing it.
pytest_plugins = ("lab.pytest_plugin", "pytester", "tests.fakenta")

# A guest without a VM: a local bash whose kernel-facing commands are stand-ins
# (guest.rc), and a vng that boots it or stalls on purpose.
FAKE_GUEST = Path(__file__).parent / "data" / "fakeguest"


def missing(why: str) -> NoReturn:
    """A host tool a test needs is absent: a skip on a developer's machine, a failure in CI
    (make deps installs everything, so there it is a broken set-up)."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI installs it (tools/ensure-deps.sh)")
    pytest.skip(why)


@pytest.fixture
def console() -> Iterator[Console]:
    """The console protocol on a real local bash on a pty: a guest without the guest."""
    child = pexpect.spawn(
        "bash", ["--noprofile", "--rcfile", str(FAKE_GUEST / "guest.rc"), "-i"],
        encoding="utf-8", env={"TERM": "dumb", "PATH": os.environ["PATH"]},
    )  # fmt: skip
    child.expect(r"[#$] $", timeout=10)
    log = io.StringIO()
    child.logfile_read = log
    con = Console(child, log)
    con.setup(timeout=10)
    yield con
    child.close(force=True)
