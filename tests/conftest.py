"""Host tests, and the lab scenarios under tests/lab, which run under lab.pytest_plugin
(one guest per pytest process: see that module)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pexpect
import pytest

from lab.console import Console

pytest_plugins = ("lab.pytest_plugin",)


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
