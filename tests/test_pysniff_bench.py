"""The bench runs end to end on the fake (numbers are not checked: hosts differ)."""

from __future__ import annotations

import json

import pytest

from pysniff import bench


@pytest.mark.parametrize("pieces", ["1", "3"])
def test_bench_reports_every_path(capsys: pytest.CaptureFixture[str], pieces: str) -> None:
    assert bench.main(["--frames", "600", "--batch", "64", "--pieces", pieces, "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert set(cost) == set(bench.PATHS) and all(v > 0 for v in cost.values())
