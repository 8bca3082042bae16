"""The NIC table and the vng command line, built without QEMU."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lab import LabError, nics
from lab.accel import Accel
from lab.guest import GuestSpec, build_argv
from lab.images import Kernel
from lab.records import NIC_SETS

KERNEL = Kernel("debian-6.1", "6.1.0-56-amd64", Path("/c/boot/vmlinuz-6.1.0-56-amd64"), None, None)


def test_sets_cover_the_three_variants() -> None:
    covered = {v.name for s in NIC_SETS for v in nics.nic_set(s)}
    assert covered == {"e1000", "rtl8139", "e1000-cb0"}
    assert nics.variant("rtl8139").driver == "8139cp"
    assert nics.variant("e1000-cb0").driver_settings == (("copybreak", "0"),)
    assert [v.name for v in nics.nic_set("e1000,e1000-cb0")] == ["e1000", "e1000-cb0"]


def test_unknown_variant_refused() -> None:
    with pytest.raises(LabError, match="unknown NIC 'ne2k'"):
        nics.nic_set("e1000,ne2k")
    with pytest.raises(LabError, match="empty NIC set"):
        nics.nic_set(",")


def test_plan_gives_unique_macs_and_sockets(tmp_path: Path) -> None:
    a = nics.plan(nics.nic_set("all"), tmp_path, guest_no=3)
    assert [p.mac for p in a] == ["52:54:00:4e:03:00", "52:54:00:4e:03:01", "52:54:00:4e:03:02"]
    assert len({p.guest_sock for p in a} | {p.host_sock for p in a}) == 6


def test_argv_exact() -> None:
    spec = GuestSpec(
        KERNEL,
        nics.nic_set("rtl8139"),
        Accel("tcg", "test"),
        append=("slub_debug=FZPU",),
        rwdirs=(Path("/r"),),
    )
    plans = nics.plan(spec.nics, Path("/s"))
    assert build_argv(spec, plans) == [
        "vng", "--run", "/c/boot/vmlinuz-6.1.0-56-amd64", "--name", "ntalab",
        "--disable-microvm", "--force-9p", "--verbose", "--memory", "1G", "--cpus", "2",
        "--disable-kvm", "--rwdir=/r", "--append", "slub_debug=FZPU",
        "--qemu-opts=-netdev dgram,id=nic0,local.type=unix,local.path=/s/g0.sock,"
        "remote.type=unix,remote.path=/s/h0.sock -device rtl8139,netdev=nic0,"
        "mac=52:54:00:4e:00:00",
    ]  # fmt: skip


def test_argv_with_kvm_has_no_disable_flag_and_quotes_cleanly() -> None:
    spec = GuestSpec(KERNEL, nics.nic_set("all"), Accel("kvm", "test"))
    argv = build_argv(spec, nics.plan(spec.nics, Path("/s")))
    assert "--disable-kvm" not in argv
    assert shlex.split(shlex.join(argv)) == argv
    opts = shlex.split(argv[-1].removeprefix("--qemu-opts="))
    assert opts.count("-netdev") == 3 and opts.count("-device") == 3


def test_argv_names_the_guest_shell() -> None:
    spec = GuestSpec(KERNEL, nics.nic_set("e1000"), Accel("tcg", "test"))
    argv = build_argv(spec, nics.plan(spec.nics, Path("/s")), shell=Path("/r/guest-shell"))
    at = argv.index("--shell")
    assert argv[at + 1] == "/r/guest-shell"


def test_argv_for_single_threaded_tcg() -> None:
    """--accel tcg-single: TCG with one thread for every vCPU, which vng cannot ask for."""
    spec = GuestSpec(KERNEL, nics.nic_set("e1000"), Accel("tcg-single", "test"))
    argv = build_argv(spec, nics.plan(spec.nics, Path("/s")))
    assert "--disable-kvm" in argv
    opts = shlex.split(argv[-1].removeprefix("--qemu-opts="))
    assert opts[-2:] == ["-accel", "tcg,thread=single"]
