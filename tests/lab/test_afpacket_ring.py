"""The benchmark's AF_PACKET baseline reads every frame, byte-exact, from its ring."""

from __future__ import annotations

import zlib

import pytest

from lab import traffic
from lab.guestside.reports import AfpacketReport
from lab.labenv import LabEnv

FRAMES = 3000
# The bench's fixed rate. Flat out, a Python reader sharing a 2-core TCG host with another
# guest fell behind its ring (609 of 3000 dropped in one matrix run): a finding about
# the host, not about whether the reader counts and checks what it is given.
RATE = 2000.0


@pytest.mark.lab
def test_tpacket_v3_ring_sees_every_frame(lab_env: LabEnv) -> None:
    nic = lab_env.use(lab_env.nics[0])
    run_id = lab_env.new_run_id()
    batch = traffic.frames(run_id, FRAMES, lab_env.addrs(nic), ("udp4", "tcp6"), seed=run_id)
    ready = lab_env.outdir / f"ready-afpacket-{run_id}"
    out = lab_env.outdir / f"afpacket-{run_id}.json"
    proc = lab_env.bkg(
        f"afpacket-{run_id}", "lab.guestside.afpacket", nic.iface, FRAMES, 120, ready,
        ready=ready, out=out,
    )  # fmt: skip

    lab_env.inject(nic, batch, RATE)

    got = proc.result(AfpacketReport.from_json, 180)
    assert (got.frames, got.kernel_drops) == (FRAMES, 0)
    assert got.bytes == sum(map(len, batch))
    assert got.crc_sum == sum(map(zlib.crc32, batch))
