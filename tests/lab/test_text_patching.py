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
N -- -k text_patching`` turns them into rates (docs/known-issues.md). A study, not part
of the matrix: they run only when ``-k`` names them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from lab.scenario import Figure, GuestNic, LabEnv, kbuild, traffic

FLIPS = 100  # register + unregister
UNLOADS = 5
FLIP = "/sys/kernel/debug/ftrace_flip/run"
TRACING = "/sys/kernel/tracing"
TARGET = "__netdev_alloc_frag_align"


def receiving(env: LabEnv, nic: GuestNic) -> AbstractContextManager[traffic.Sustained]:
    """Frames sent to ``nic`` as fast as it takes them until the block ends."""
    return env.sending(nic, traffic.frames(1, 300, env.addrs(nic)))


def frag_path_nic(env: LabEnv) -> GuestNic:
    """The e1000 NIC whose every buffer comes from __netdev_alloc_frag_align."""
    return env.with_driver_settings(*env.needs_nics("e1000-cb0"))


@pytest.mark.investigation("text_patching")
@pytest.mark.parametrize("ops", ["ipmodify", "plain", "tracer"])
def test_text_patching_of_a_bare_ftrace_site_under_receive_traffic(
    nta_env: LabEnv, ops: str, figure: Figure
) -> None:
    """NTA unloaded: a do-nothing ops on __netdev_alloc_frag_align (IPMODIFY as NTA's, or
    plain) registered and removed FLIPS times while e1000 receives flat out; or, with no
    module at all, the function tracer switched on and off for that function through
    tracefs (the reproducer a kernel or QEMU developer can run as it is). Each flip is
    logged, so a kernel that dies says how far it got."""
    env = nta_env
    nic = frag_path_nic(env)
    built = kbuild.build(env.kernel)
    assert built.flipper is not None and built.flipper.is_file(), built.log
    env.module.unload()  # loaded again when the test ends
    env.act(f"mountpoint -q {TRACING} || mount -t tracefs nodev {TRACING}", undo=None)
    if ops != "tracer":
        env.insmod(built.flipper)
    rx0 = env.rx(nic)
    with receiving(env, nic):
        if ops == "tracer":
            env.act(f"echo {TARGET} > {TRACING}/set_ftrace_filter",
                    undo=f"echo nop > {TRACING}/current_tracer; "
                         f"echo > {TRACING}/set_ftrace_filter")  # fmt: skip
            env.act(
                f"for i in $(seq {FLIPS}); do echo function > {TRACING}/current_tracer; "
                f"echo nop > {TRACING}/current_tracer; echo tracer flip $i of {FLIPS} "
                f"> /dev/kmsg; done",
                undo=None, timeout=900,
            )  # fmt: skip
        else:
            env.act(f"echo {FLIPS} {int(ops == 'ipmodify')} > {FLIP}", undo=None, timeout=900)
            assert env.cmd(f"cat {FLIP}").stdout.strip() == str(FLIPS)
    took = (env.rx(nic) - rx0).packets
    assert took > 0, "no traffic while the site was patched"
    figure(nic, f"{FLIPS} {ops} flips under {took} frames, no oops")


@pytest.mark.investigation("text_patching")
def test_text_patching_by_nta_unloading_under_receive_traffic(
    nta_env: LabEnv, figure: Figure
) -> None:
    """NTA loaded serving e1000 and unloaded UNLOADS times while it receives flat out:
    each unload takes the redirects out of four sites (no bounce between: the rings keep
    the buffers they hold, as a user's rmmod leaves them)."""
    env = nta_env
    loaded = env.module.loaded
    assert loaded is not None
    nic = frag_path_nic(env)
    rx0 = env.rx(nic)
    with receiving(env, nic):
        for _ in range(UNLOADS):
            gone = env.module.rmmod()
            assert gone.rc == 0, gone
            back = env.module.try_load(loaded.params)
            assert back.rc == 0, back
    took = (env.rx(nic) - rx0).packets
    env.bounce(env.nics)
    assert took > 0, "no traffic while NTA unloaded"
    figure(nic, f"{UNLOADS} unloads under {took} frames, no oops")
