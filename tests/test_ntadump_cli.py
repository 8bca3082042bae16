"""ntadump, built as the lab builds it, meets bad input with a clear error and its exit code.

The capture itself needs the module and runs in guests (tests/lab); here the
host's compiler builds it (warnings are errors; the ``ntadump`` fixture of
tests/fakenta.py) and its refusals are checked: bad usage exits 2, a missing
device or a module speaking another ABI exit 1 with a message naming the
problem, never a crash or wrong frames.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pysniff import abi


def run(program: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(program), *args], capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize(
    "args",
    [(), ("-c", "5"), ("-i", "lo", "-c", "0"), ("-i", "lo", "-c", "many"),
     ("-i", "lo", "-f", "icmp", "extra"), ("-i", "lo", "-Q", "sideways"), ("-x",),
     ("-i", "x" * 40)],
)  # fmt: skip
def test_bad_usage_exits_2(ntadump: Path, args: tuple[str, ...]) -> None:
    proc = run(ntadump, *args)
    assert proc.returncode == 2, proc
    assert "usage: ntadump -i IFACE" in proc.stderr
    assert proc.stdout == ""


def test_a_bad_filter_is_status_2_before_the_device_is_opened(
    ntadump: Path, tmp_path: Path
) -> None:
    """Compiled (on a live handle of the interface, as tcpdump does) before /dev/nta is
    opened: the error is libpcap's, and nothing was attached."""
    if os.geteuid() != 0:
        pytest.skip("libpcap needs root to open lo for the compile")
    proc = run(ntadump, "-i", "lo", "-D", str(tmp_path / "nta"), "tcp", "port")
    assert proc.returncode == 2, proc
    assert proc.stderr == (
        "ntadump: cannot compile the filter 'tcp port': can't parse filter expression: "
        "syntax error\n"
    )
    # A good one gets as far as the device.
    proc = run(ntadump, "-i", "lo", "-D", str(tmp_path / "nta"), "-f", "vlan and icmp")
    assert proc.returncode == 1 and "is the nta module loaded?" in proc.stderr, proc


def test_no_device_says_load_the_module(ntadump: Path, tmp_path: Path) -> None:
    proc = run(ntadump, "-i", "lo", "-D", str(tmp_path / "nta"))
    assert proc.returncode == 1, proc
    assert proc.stderr == f"ntadump: no {tmp_path / 'nta'}: is the nta module loaded?\n"


def test_another_abi_is_refused_before_anything_is_read(ntadump: Path, tmp_path: Path) -> None:
    """A 'device' whose meta page speaks ABI 1: refused with both versions named."""
    fake = tmp_path / "nta"
    meta = abi.META.pack(magic=abi.MAGIC, abi_version=1, meta_size=abi.META.size,
                         record_size=abi.RECORD.size, commit_size=abi.COMMIT.size)  # fmt: skip
    fake.write_bytes(meta.ljust(4096, b"\0"))
    proc = run(ntadump, "-i", "lo", "-D", str(fake))
    assert proc.returncode == 1, proc
    assert proc.stderr == (
        f"ntadump: the module speaks ABI 1 (magic {abi.MAGIC:#x}), ntadump {abi.ABI_VERSION}\n"
    )
