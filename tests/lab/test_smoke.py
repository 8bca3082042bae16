"""Smoke: the guest receives exactly what the host injects, on every NIC, byte for byte."""

from __future__ import annotations

import zlib

import pytest

from lab import traffic
from lab.labenv import LabEnv

FRAMES = 1000


@pytest.mark.lab
def test_every_injected_frame_arrives(lab_env: LabEnv) -> None:
    for gn in lab_env.each_nic():
        run_id = lab_env.new_run_id()
        batch = traffic.frames(run_id, FRAMES, lab_env.addrs(gn), traffic.KINDS, seed=run_id)
        rx0 = lab_env.guest.rx_counts(gn.iface)

        got = lab_env.capture_while(gn, run_id, batch)

        name = gn.plan.variant.name
        rx = lab_env.nic_took(gn, rx0, FRAMES)
        tally = got["tally"]
        assert isinstance(tally, dict)
        lost = lab_env.all_but_missed(name, tally["interfaces"].get(gn.iface, {}), FRAMES, rx)
        assert got["socket_drops"] == 0, name
        sent = {seq: zlib.crc32(frame) for seq, frame in enumerate(batch) if seq not in lost}
        assert dict(map(tuple, got["crcs"])) == sent, f"{name}: frame bytes differ"  # type: ignore[call-overload]
