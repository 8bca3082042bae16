"""The benchmark's arithmetic: medians over rounds, per-frame costs, ratio to AF_PACKET."""

from __future__ import annotations

from lab.bench import Trial, summarize, table


def trial(sniffer: str, rnd: int, cpu: float, softirq: float, delivered: int = 1000) -> Trial:
    return Trial("max", sniffer, rnd, 1000, 5000, 1000, delivered, cpu, softirq, cpu + softirq)


def test_medians_costs_and_ratio() -> None:
    trials = [
        trial("none", 0, 0.0, 0.10),
        trial("afpacket", 0, 0.40, 0.30),
        trial("nta", 0, 0.20, 0.20),
        trial("none", 1, 0.0, 0.12),
        trial("afpacket", 1, 0.44, 0.30),
        trial("nta", 1, 0.22, 0.16, delivered=990),
        trial("none", 2, 0.0, 0.11),
        trial("afpacket", 2, 0.60, 0.32),
        trial("nta", 2, 0.21, 0.18),
    ]
    rows = {r["sniffer"]: r for r in summarize(trials)}
    afp, nta = rows["afpacket"], rows["nta"]
    assert afp["sniffer_cpu_s"] == 0.44 and afp["softirq_s"] == 0.30
    assert round(afp["total_s_per_mframe"]) == round((0.44 + 0.30 - 0.11) / 1000 * 1e6)
    assert nta["delivered"] == 1000 and nta["drops"] == 0
    assert nta["ratio_to_afpacket"] == round(
        ((0.21 + 0.18 - 0.11) / 1000) / ((0.44 + 0.30 - 0.11) / 1000), 3
    )
    assert rows["none"]["ratio_to_afpacket"] is None
    lines = table(list(rows.values())).splitlines()
    assert lines[0].split()[:2] == ["load", "sniffer"]
    assert lines[3].split()[1] == "afpacket" and lines[3].endswith("1.00x")
