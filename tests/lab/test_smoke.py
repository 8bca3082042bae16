"""Smoke: the guest receives exactly what the host injects, on every NIC, byte for byte."""

from __future__ import annotations

import zlib

from lab.scenario import GuestNic, LabEnv, checks, traffic

FRAMES = 1000


def test_every_injected_frame_arrives(lab_env: LabEnv, nic: GuestNic) -> None:
    run_id = lab_env.new_run_id()
    batch = traffic.frames(run_id, FRAMES, lab_env.addrs(nic), traffic.KINDS, seed=run_id)
    rx0 = lab_env.rx(nic)

    got = lab_env.capture_while(nic, run_id, batch)

    rx = lab_env.settled_rx(nic, rx0, FRAMES)
    lost = checks.all_but_missed(nic.name, got.tally.of(nic.iface), FRAMES, rx)
    assert got.socket_drops == 0, nic.name
    sent = {seq: zlib.crc32(frame) for seq, frame in enumerate(batch) if seq not in lost}
    assert got.crcs == sent, f"{nic.name}: frame bytes differ"
