"""NTA in a guest: frames land in NTA chunks, reach pysniff intact, and all come back.

The module is built for the guest's kernel (W=1, warning-free) and loaded once
per guest; every NIC of the guest is then sniffed in turn through pysniff.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import kbuild, traffic
from lab.labenv import LabEnv
from pysniff import signature

FRAMES = 1000
# What pysniff, verifying and writing a pcap frame by frame in a TCG guest,
# keeps up with. Faster, it holds max_shared chunks and NTA stops sharing
# (not_shared), which is the limit scenario's business, not delivery's.
READER_RATE = 250.0


def wait_in_use(env: LabEnv, want: int, timeout: float = 30.0) -> dict[str, Any]:
    """The module returns chunks by a periodic sweep: poll until in_use settles."""
    deadline = time.monotonic() + timeout
    while True:
        stats = env.nta_stats()
        if stats["in_use"] == want or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def balanced(stats: dict[str, Any]) -> None:
    assert stats["allocated"] == stats["freed"] + stats["in_use"], stats
    assert stats["published"] == (
        stats["committed"] + stats["returned_on_close"] + stats["outstanding"]
    ), stats


@pytest.fixture(scope="module")
def nta(lab_env: LabEnv) -> Iterator[LabEnv]:
    built = kbuild.build(lab_env.kernel)
    assert built.status is kbuild.BuildStatus.OK, built.warnings or built.log.read_text()[-3000:]
    sh = lab_env.guest.sh
    # Served from load on, then the links bounce: the drivers refill their
    # receive rings, which they filled before NTA existed, from NTA's chunks.
    lab_env.module = built.module
    lab_env.module_params = "attach=" + ",".join(gn.iface for gn in lab_env.nics)
    sh.run(f"insmod {built.module} {lab_env.module_params}")
    for gn in lab_env.nics:
        lab_env.guest.bounce_nic(gn)
    version = sh.run("dmesg | grep 'nta: version'").stdout
    assert "abi 1" in version, version
    yield lab_env
    # The NICs' rings still hold NTA buffers: taking the links down frees them.
    for gn in lab_env.nics:
        lab_env.guest.sh.run(f"ip link set {gn.iface} down")
    stats = wait_in_use(lab_env, 0)
    assert stats["in_use"] == 0, stats
    balanced(stats)
    lab_env.guest.sh.run("rmmod nta")
    lab_env.module = None
    for gn in lab_env.nics:
        lab_env.guest.bounce_nic(gn)


@pytest.mark.lab
@pytest.mark.boot_profiles("debug")
def test_nta_delivers_every_frame_in_place(nta: LabEnv) -> None:
    for gn in nta.nics:
        name = gn.plan.variant.name
        run_id = nta.new_run_id()
        batch = traffic.frames(run_id, FRAMES, nta.addrs(gn), traffic.KINDS, seed=run_id)
        pcap = nta.outdir / f"pysniff-{name}-{run_id}.pcap"
        before = nta.nta_stats()

        got = nta.sniff_while(gn, run_id, batch, "-w", pcap, rate=READER_RATE)

        seen = got["verify"]["interfaces"][gn.iface]
        assert seen == signature.perfect(FRAMES), name
        assert got["committed"] == FRAMES, name
        assert got["refused"] == 0, name
        assert traffic.read_pcap(pcap) == batch, f"{name}: pysniff's pcap differs from the wire"
        after = got["stats_after"]
        assert after["published"] - before["published"] == FRAMES, name
        assert after["committed"] - before["committed"] == FRAMES, name
        assert after["fallback"] == before["fallback"], f"{name}: frames outside NTA chunks"
        assert after["outstanding"] == 0, name
        balanced(after)
