"""The matrix report, from a JUnit file shaped like pytest's."""

from __future__ import annotations

from pathlib import Path

from lab import scenarios

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.lab.test_smoke"
 name="test_delivery[debian-6.1/e1000,rtl8139]" time="41.2"><properties>
<property name="figure:e1000" value="1000/1000"/>
<property name="figure:rtl8139" value="999/1000"/></properties></testcase>
<testcase classname="tests.lab.test_smoke"
 name="test_delivery[debian-6.12/e1000-cb0]@debian-6.12/e1000-cb0" time="12.0">
<failure message="AssertionError: e1000-cb0&#10;assert 999 == 1000">trace</failure></testcase>
<testcase classname="tests.lab.test_smoke"
 name="test_unload[debian-6.12/e1000-cb0]" time="0.5">
<skipped message="not yet"/></testcase>
</testsuite></testsuites>
"""


def test_junit_to_cells_one_row_per_nic_variant(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    cells = scenarios.parse_junit(path)
    fail = scenarios.Cell("fail", 12.0, "AssertionError: e1000-cb0")
    assert cells == {
        ("debian-6.1/e1000", "delivery"): scenarios.Cell("pass", 41.2, "", "1000/1000"),
        ("debian-6.1/rtl8139", "delivery"): scenarios.Cell("pass", 41.2, "", "999/1000"),
        ("debian-6.12/e1000-cb0", "delivery"): fail,
        ("debian-6.12/e1000-cb0", "unload"): scenarios.Cell("skip", 0.5, "not yet"),
    }
    table = scenarios.matrix_table(cells).splitlines()
    assert table[0].split() == ["kernel/nic", "1", "2"]
    assert table[2].split() == ["debian-6.1/e1000", "ok", "1000/1000", "-"]
    assert table[3].split() == ["debian-6.1/rtl8139", "ok", "999/1000", "-"]
    assert table[4].split() == ["debian-6.12/e1000-cb0", "FAIL", "skip"]
    assert table[6:] == [
        "1: delivery (41s)",
        "2: unload (0s)",
        "",
        "failures:",
        "  delivery on debian-6.12/e1000-cb0: AssertionError: e1000-cb0",
    ]


def test_variant_rows_keep_the_boot_profile() -> None:
    assert scenarios.variant_rows("debian-6.1/all/debug") == [
        "debian-6.1/e1000/debug",
        "debian-6.1/rtl8139/debug",
        "debian-6.1/e1000-cb0/debug",
    ]
    assert scenarios.variant_rows("debian-6.1/e1000,e1000-cb0") == [
        "debian-6.1/e1000",
        "debian-6.1/e1000-cb0",
    ]
