"""The matrix report, from a JUnit file shaped like pytest's."""

from __future__ import annotations

from pathlib import Path

from lab import scenarios

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.lab.test_smoke"
 name="test_delivery[debian-6.1/e1000+rtl8139]" time="41.2"/>
<testcase classname="tests.lab.test_smoke"
 name="test_delivery[debian-6.12/e1000-cb0]" time="12.0">
<failure message="AssertionError: e1000-cb0&#10;assert 999 == 1000">trace</failure></testcase>
<testcase classname="tests.lab.test_smoke"
 name="test_unload[debian-6.12/e1000-cb0]" time="0.5">
<skipped message="not yet"/></testcase>
</testsuite></testsuites>
"""


def test_junit_to_cells(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    cells = scenarios.parse_junit(path)
    assert cells == {
        ("debian-6.1/e1000+rtl8139", "delivery"): scenarios.Cell("pass", 41.2, ""),
        ("debian-6.12/e1000-cb0", "delivery"): scenarios.Cell(
            "fail", 12.0, "AssertionError: e1000-cb0"
        ),
        ("debian-6.12/e1000-cb0", "unload"): scenarios.Cell("skip", 0.5, "not yet"),
    }
    table = scenarios.matrix_table(cells).splitlines()
    assert table[0].split() == ["kernel/nic-set", "1", "2"]
    assert table[2].split() == ["debian-6.1/e1000+rtl8139", "pass", "41s", "-"]
    assert table[3].split() == ["debian-6.12/e1000-cb0", "fail", "12s", "skip", "0s"]
    assert table[-2:] == ["1: delivery", "2: unload"]
