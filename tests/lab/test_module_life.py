"""NTA's life beside the kernel: redirects only while a device is served, refills in
every context, a reader attaching and detaching, its devices going, wakeups on a link
that goes quiet.

The allocation redirects (ftrace) are in place only while NTA serves some device:
with nothing attached the kernel's functions run untouched, and a device NTA does
not serve never calls into the module. e1000 refills its ring from NAPI and from
process context (open, reset, ring size changes under rtnl): a DEBUG_PREEMPT
kernel (the sanitizer kernels) reports any per-CPU access made there with
preemption on. A reader's attachments are reusable, a detached device publishes
nothing, the mappings are never executable, and poll() says POLLHUP once every
device a reader had is gone. The last frame before a silence reaches a reader within
its wakeup policy, however the wakeup timer's callback interleaves with it.
"""

from __future__ import annotations

import random
import time

import pytest

from lab.scenario import (
    IDLE_S,
    Figure,
    GuestNic,
    LabEnv,
    Lifecycle,
    LifecycleReport,
    SniffReport,
    traffic,
    wait_until,
)

TRACING = "/sys/kernel/tracing"
# What each redirect replaces: the kernel's receive allocators and e1000's refill.
REDIRECTED = {"__netdev_alloc_skb", "__netdev_alloc_frag_align", "e1000_alloc_rx_buffers"}
NAPI_ALLOC = {"__napi_alloc_skb", "napi_alloc_skb"}  # the name depends on the kernel
# NTA's functions an e1000 refill of a device it serves goes through.
REFILL_PATH = ("nta_e1000_refill", "nta_netdev_alloc_frag")
CYCLES = 12  # attach/detach cycles: more than a reader's 8 attachments at once
LIFECYCLE_FRAMES = 50
PAIRS = 20
WAKEUP_USECS = 20_000
PAIR_GAP_S = 0.025  # the second frame comes while the first's timer callback lingers
STALL_US = 20_000
SILENCE_S = 1.0
# What a frame may wait beyond wakeup_usecs before its reader runs under TCG on a
# shared 2-core host (test_fastpath's LATENCY_SLACK_US); a lost wakeup waits for the
# next pair, SILENCE_S later.
LATENCY_SLACK_US = 250_000
REDIRECTS_GONE_S = 30  # for the redirects to go once the last reader closed


def tracing(env: LabEnv) -> None:
    # Mounted for good, as NTA's load mounts debugfs: nothing depends on it not being.
    env.act(f"mountpoint -q {TRACING} || mount -t tracefs nodev {TRACING}", undo=None)


def redirected(env: LabEnv) -> set[str]:
    """The kernel functions whose ftrace site calls NTA now (tracefs enabled_functions)."""
    tracing(env)
    lines = env.cmd(f"cat {TRACING}/enabled_functions").stdout.splitlines()
    return {line.split()[0] for line in lines if "[nta]" in line}


@pytest.mark.sanitizers
def test_redirects_are_in_place_only_while_a_device_is_served(
    nta_env: LabEnv, figure: Figure
) -> None:
    """Loaded with devices to serve, every redirect is in place; loaded serving nothing,
    none is; a reader attaching puts them in, its close takes them out."""
    env = nta_env
    served = redirected(env)
    assert served >= REDIRECTED and served & NAPI_ALLOC, served
    env.module.reload_with("")
    assert redirected(env) == set(), "redirects in place with nothing served"
    nic = env.with_driver_settings(env.nics[0])
    sn = env.pysniff(nic, "redirects-reader", "--bulk")
    assert redirected(env) >= REDIRECTED, "a reader's device is not served"
    sn.stop()
    wait_until(lambda: not redirected(env), REDIRECTS_GONE_S,
               "the redirects to go with the last device")  # fmt: skip
    figure(nic, f"{len(served)} redirects while serving, none otherwise")


def nta_calls(env: LabEnv, action: str) -> dict[str, int]:
    """How often each of REFILL_PATH ran while ``action`` (a guest command) ran."""
    tracing(env)
    off = f"echo nop > {TRACING}/current_tracer && echo > {TRACING}/set_ftrace_filter"
    env.act(f"echo ':mod:nta' > {TRACING}/set_ftrace_filter && echo > {TRACING}/trace && "
            f"echo function > {TRACING}/current_tracer", undo=off)  # fmt: skip
    try:
        # A ring resize and a link bounce that end as they began (see resized_and_bounced).
        env.act(action, undo=None, timeout=120)
        text = env.cmd(f"cat {TRACING}/trace").stdout  # before nop: a tracer change clears it
    finally:
        env.act(off, undo=None)
    return {fn: sum(f" {fn} <-" in line or f": {fn} <-" in line for line in text.splitlines())
            for fn in REFILL_PATH}  # fmt: skip


def resized_and_bounced(nic: GuestNic) -> str:
    """e1000 refills its ring from process context: a ring size change (under rtnl) and a
    link bounce, and back."""
    i = nic.iface
    return (
        f"ethtool -G {i} rx 512 && ip link set {i} down && ip link set {i} up && "
        f"ethtool -G {i} rx 256 && sleep 1"
    )


@pytest.mark.sanitizers
def test_e1000_refills_in_every_context_served_and_unserved(
    nta_env: LabEnv, figure: Figure
) -> None:
    """Two e1000 devices, one served (a reader attached), one not, each resized and bounced
    while NTA is loaded: the unserved one's refills never call into NTA; the served one's
    are served from process context too, with no report from a DEBUG_PREEMPT kernel (the
    splat scan after every test), and its frames are delivered after."""
    env = nta_env
    e1000s = env.needs_nics(driver="e1000", count=2)
    served, other = env.with_driver_settings(e1000s[0]), e1000s[1]
    env.module.reload_with(f"attach={served.iface}")
    unserved = nta_calls(env, resized_and_bounced(other))
    assert unserved == dict.fromkeys(REFILL_PATH, 0), f"{other.iface}, unserved: {unserved}"
    sn = env.pysniff(served, "refills-reader", "--bulk", "-c", LIFECYCLE_FRAMES, idle=IDLE_S,
                     refill=False)  # fmt: skip
    calls = nta_calls(env, resized_and_bounced(served))
    assert all(calls.values()), f"{served.iface}, served: {calls}"
    env.links_up([served])
    rx0 = env.rx(served)
    env.send(served, traffic.frames(5, LIFECYCLE_FRAMES, env.addrs(served), ("udp4",)))
    took = env.settled_rx(served, rx0, LIFECYCLE_FRAMES).packets
    got = sn.result(SniffReport.from_json)
    assert got.frames == took == LIFECYCLE_FRAMES, got
    figure(served, f"unserved refills: no NTA call; served: {calls}")


@pytest.mark.sanitizers
def test_a_reader_attaches_detaches_and_hears_its_devices_go(
    nta_env: LabEnv, figure: Figure
) -> None:
    """One reader: CYCLES attach/detach cycles then attached, its live counts; detached, no
    record and no count; no executable mapping; POLLHUP once its only device is deleted."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    going = env.add_link("ntagone0", "type veth peer name ntagone1")
    env.act(f"ip link set {going} up", undo=None)  # a link of the test's own
    steps = env.outdir / "lifecycle"
    steps.mkdir(exist_ok=True)
    proc = env.bkg("lifecycle", Lifecycle(nic.iface, CYCLES, going, steps))
    a = env.addrs(nic)
    for n, name in enumerate(("cycles", "detached")):
        proc.wait_file(steps / name)
        if name == "cycles":
            env.bounce([nic])
        rx0 = env.rx(nic)
        env.send(nic, traffic.frames(n, LIFECYCLE_FRAMES, a, ("udp4",)))
        env.settled_rx(nic, rx0, LIFECYCLE_FRAMES)
        (steps / f"{name}-done").write_text("")
    proc.wait_file(steps / "going")
    env.delete_link(going)
    (steps / "going-done").write_text("")
    r = proc.result(LifecycleReport.from_json)
    assert (r.cycles, r.attach_error) == (CYCLES, ""), r
    assert r.frames == r.received == r.published == LIFECYCLE_FRAMES, r
    assert (r.records_after_detach, r.received_after_detach) == (0, 0), r
    assert r.exec_map_refused and r.exec_mprotect_refused, r
    assert r.hung_up, r
    figure(nic, f"{r.cycles} cycles, live counts {r.received}, nothing after detach, POLLHUP")
    env.quiesced()


@pytest.mark.sanitizers
def test_the_last_frame_before_silence_wakes_the_reader_in_time(
    nta_env: LabEnv, figure: Figure
) -> None:
    """PAIRS pairs of frames PAIR_GAP_S apart, each followed by silence, their flows spread
    over both CPUs (RPS): the timer wakes the reader for the first, on the CPU that took
    it, and the second, taken on the other CPU half the time, arrives while the timer's
    callback is still returning (fault_timer_stall_us keeps it there). The second must
    wake the reader wakeup_usecs after it, not at the next pair: a timer still returning
    from its callback is not one that will fire, so whoever finds records not yet due
    must arm it, whatever the callback is doing."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    env.module.set_param("fault_timer_stall_us", STALL_US)
    env.set_rps_cpus(nic, "3")
    sn = env.pysniff(nic, "pairs", "--wakeup-frames", 256, "--wakeup-usecs", WAKEUP_USECS,
                     idle=3 * SILENCE_S + IDLE_S)  # fmt: skip
    a, rng = env.addrs(nic), random.Random(env.new_run_id())
    for _ in range(PAIRS):
        first, second = (traffic.udp_request(a, 9, rng.randrange(1024, 65536), b"pair" * 8)
                         for _ in range(2))  # fmt: skip
        env.send(nic, [first])
        time.sleep(PAIR_GAP_S)
        env.send(nic, [second])
        time.sleep(SILENCE_S)
    got = sn.result(SniffReport.from_json)
    assert got.frames == 2 * PAIRS, got
    assert got.max_wait_us <= WAKEUP_USECS + STALL_US + LATENCY_SLACK_US, got.max_wait_us
    figure(nic, f"{2 * PAIRS} frames in pairs, max wait {got.max_wait_us / 1000:.1f} ms")
    env.quiesced()
