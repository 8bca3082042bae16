"""Rewriting a function's ftrace site while another CPU runs it: the kernel's text patching
under receive traffic, with NTA and without it.

On debian-6.12 (IBT: the site is at +4, after ENDBR64), once in three guests that
ran it, ``rmmod nta`` under e1000 traffic ended in ``Oops: int3`` at
``__netdev_alloc_frag_align+0x5``: a CPU executed the temporary int3 that
text_poke_bp() writes into the site after the patch had completed. These
scenarios ask whose fault that is. NTA's unload under traffic, again and again;
and the same site patched the same way with NTA not loaded at all, by
kmod/ftrace_flip.c, a do-nothing ftrace ops registered and removed (IPMODIFY as
NTA's, and plain) while e1000 receives as fast as it can. ``ntalab run --repeat
N -- -k text_patching`` turns them into rates (README, "Shortfalls"). A study, not part
of the matrix: they run only when ``-k`` names them.
"""

from __future__ import annotations

import shlex
from contextlib import AbstractContextManager

import pytest

from lab import kbuild, traffic
from lab.guestnet import GuestNic
from lab.labenv import LabEnv
from lab.pytest_plugin import Figure

FLIPS = 100  # register + unregister
UNLOADS = 5
FLIP = "/sys/kernel/debug/ftrace_flip/run"
TRACING = "/sys/kernel/tracing"
TARGET = "__netdev_alloc_frag_align"


def receiving(env: LabEnv, nic: GuestNic) -> AbstractContextManager[traffic.Sustained]:
    """Frames sent to ``nic`` as fast as it takes them until the block ends."""
    return traffic.sustained(nic.host, traffic.frames(1, 300, env.addrs(nic)), nic.rate)


def frag_path_nic(env: LabEnv) -> GuestNic:
    """The e1000 NIC whose every buffer comes from __netdev_alloc_frag_align."""
    return env.use(next(n for n in env.nics if n.name == "e1000-cb0"))


@pytest.mark.lab
@pytest.mark.investigation("text_patching")
@pytest.mark.parametrize("ops", ["ipmodify", "plain", "tracer"])
def test_text_patching_of_a_bare_ftrace_site_under_receive_traffic(
    nta: LabEnv, ops: str, figure: Figure
) -> None:
    """NTA unloaded: a do-nothing ops on __netdev_alloc_frag_align (IPMODIFY as NTA's, or
    plain) registered and removed FLIPS times while e1000 receives flat out; or, with no
    module at all, the function tracer switched on and off for that function through
    tracefs (the reproducer a kernel or QEMU developer can run as it is). Each flip is
    logged, so a kernel that dies says how far it got."""
    loaded = nta.nta.loaded
    assert loaded is not None
    nic = frag_path_nic(nta)
    built = kbuild.build(nta.kernel)
    assert built.flipper is not None and built.flipper.is_file(), built.log
    nta.nta.unload(bounce=nta.nics)
    nta.defer(nta.nta.load, loaded.module, loaded.params, nta.nics)
    nta.cmd(f"mountpoint -q {TRACING} || mount -t tracefs nodev {TRACING}")
    if ops != "tracer":
        nta.cmd(f"insmod {shlex.quote(str(built.flipper))}")
        nta.defer(nta.cmd, "rmmod ftrace_flip")
    rx0 = nta.rx(nic)
    with receiving(nta, nic):
        if ops == "tracer":
            nta.cmd(f"echo {TARGET} > {TRACING}/set_ftrace_filter")
            nta.defer(nta.cmd, f"echo nop > {TRACING}/current_tracer; "
                               f"echo > {TRACING}/set_ftrace_filter")  # fmt: skip
            nta.cmd(
                f"for i in $(seq {FLIPS}); do echo function > {TRACING}/current_tracer; "
                f"echo nop > {TRACING}/current_tracer; echo tracer flip $i of {FLIPS} "
                f"> /dev/kmsg; done",
                timeout=900,
            )
        else:
            nta.cmd(f"echo {FLIPS} {int(ops == 'ipmodify')} > {FLIP}", timeout=900)
            assert nta.cmd(f"cat {FLIP}").stdout.strip() == str(FLIPS)
    took = (nta.rx(nic) - rx0).packets
    assert took > 0, "no traffic while the site was patched"
    figure(nic, f"{FLIPS} {ops} flips under {took} frames, no oops")


@pytest.mark.lab
@pytest.mark.investigation("text_patching")
def test_text_patching_by_nta_unloading_under_receive_traffic(nta: LabEnv, figure: Figure) -> None:
    """NTA loaded serving e1000 and unloaded UNLOADS times while it receives flat out:
    each unload takes the redirects out of four sites."""
    loaded = nta.nta.loaded
    assert loaded is not None
    nic = frag_path_nic(nta)
    rx0 = nta.rx(nic)
    with receiving(nta, nic):
        for _ in range(UNLOADS):
            nta.nta.unload()
            nta.nta.load(loaded.module, loaded.params)
    took = (nta.rx(nic) - rx0).packets
    nta.net.bounce(nta.nics)
    assert took > 0, "no traffic while NTA unloaded"
    figure(nic, f"{UNLOADS} unloads under {took} frames, no oops")
