"""The bench runs end to end on the fake (numbers are not checked: hosts differ)."""

from __future__ import annotations

import json

import pytest

from pysniff import bench


def test_bench_reports_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--frames", "600", "--ring", "256", "--json"]) == 0
    rates = json.loads(capsys.readouterr().out)
    assert set(rates) == set(bench.PATHS) and all(v > 0 for v in rates.values())
