"""The plugin's hold on scenarios, in a pytest run of made-up ones on a fake guest.

Every test in the scenarios directory takes a door (``lab_env`` or
``nta_env``) and is marked ``lab`` by the plugin, or collection fails; and
before each test the guest is checked against its documented state and put
back if a test before broke it, the restore recorded in results.json and
events.jsonl. The fake guest (``tests/fakebed.py``) stands in for the booted
one: the plugin's two session fixtures are replaced in the run's conftest,
everything else is the plugin's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.events import EventTail
from lab.records import RESULTS, EventKind, GuestRequest, GuestResult, Outcome, RunResult
from lab.report import cells, matrix_table
from lab.testbed import Departure, Testbed

CONFTEST = """
import pytest
from tests.fakebed import fake_testbed, kernel_of

@pytest.fixture(scope="session")
def lab_testbed(tmp_path_factory):
    return fake_testbed(tmp_path_factory.mktemp("guest"))

@pytest.fixture(scope="session")
def nta_loaded(lab_testbed):
    module = lab_testbed.outdir / "nta.ko"
    module.write_text("")
    return lab_testbed.load_run_module(module, "attach=eth0,eth1")

@pytest.fixture
def fake_kernel(lab_testbed):
    return kernel_of(lab_testbed)
"""

# One scenario breaks the guest where the door cannot help (a module that went
# away, a NIC that went down, a bridge and a namespace left over); the next needs it.
BREAK_THEN_NEED = """
def test_a_breaks_the_guest(nta_env, fake_kernel):
    fake_kernel.break_behind_the_door("eth1")

def test_b_needs_it(nta_env):
    assert nta_env.module.stats().in_use == 0
    assert nta_env.cmd("cat /sys/class/net/eth1/operstate").stdout.strip() == "up"
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The made-up scenarios run under the plugin, as ``ntalab run`` runs a guest's."""
    request = pytester.path / "guest" / "request.json"
    request.parent.mkdir(exist_ok=True)
    GuestRequest(kernel="fake", nic_set="e1000,rtl8139").save(request)
    return pytester.runpytest_inprocess(
        "-p", "lab.pytest_plugin", "-p", "no:cacheprovider", "--lab-request", str(request),
        "--lab-scenarios", str(pytester.path), *args,
    )  # fmt: skip


def results(pytester: pytest.Pytester) -> GuestResult:
    return GuestResult.load(pytester.path / "guest" / RESULTS)


def test_a_test_that_broke_the_guest_is_restored_after_and_recorded(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scenarios=BREAK_THEN_NEED)
    run(pytester, "-m", "lab").assert_outcomes(passed=2)
    cases = {c.scenario: c for c in results(pytester).cases}
    assert cases["a_breaks_the_guest"].restored == ""
    assert cases["b_needs_it"].restored == (
        "restored after test_a_breaks_the_guest: ntabr9 left over; nta-left network "
        "namespace left over; eth1 down; eth1 without the host as neighbour; NTA not loaded"
    )
    events = EventTail(pytester.path / "guest" / "events.jsonl").new()
    restored = [e for e in events if e.kind is EventKind.RESTORED]
    assert [(e.test, e.detail) for e in restored] == [
        ("test_b_needs_it", cases["b_needs_it"].restored)
    ]
    table = matrix_table(cells(RunResult([results(pytester)], 1.0)))
    assert "restored:\n  b_needs_it on fake/e1000, fake/rtl8139: restored after" in table


def test_without_the_restore_the_test_that_needs_the_guest_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: with the restore a no-op, the broken guest is inherited."""

    def nothing(self: Testbed, with_module: bool) -> list[Departure]:
        return []

    monkeypatch.setattr(Testbed, "restore", nothing)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_scenarios=BREAK_THEN_NEED)
    run(pytester, "-m", "lab").assert_outcomes(passed=1, failed=1)
    cases = {c.scenario: c for c in results(pytester).cases}
    assert cases["b_needs_it"].outcome is Outcome.FAIL
    assert cases["b_needs_it"].message.endswith("failed (1): cat /sys/kernel/debug/nta/stats")
    assert cases["b_needs_it"].restored == ""


def test_a_scenario_that_takes_no_door_fails_collection(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_scenarios="""
        def test_with_a_door(lab_env):
            pass

        def test_without_one():
            pass
        """
    )
    result = run(pytester, "-m", "not lab")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*take neither lab_env nor nta_env*test_scenarios.py::test_without_one*"]
    )


def test_every_test_taking_a_door_is_marked_lab_and_none_else(pytester: pytest.Pytester) -> None:
    """No @pytest.mark.lab to forget: make unit (-m "not lab") never boots a guest for a
    scenario, and ntalab run (-m lab) never leaves one out."""
    pytester.makeconftest(CONFTEST)
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "test_s.py").write_text(
        "def test_guest(lab_env):\n    pass\n\ndef test_module(nta_env, nic):\n    pass\n"
    )
    (pytester.path / "test_host.py").write_text("def test_host():\n    pass\n")
    request = pytester.path / "guest" / "request.json"
    request.parent.mkdir()
    GuestRequest(kernel="fake", nic_set="e1000,rtl8139").save(request)
    common = ("-p", "lab.pytest_plugin", "-p", "no:cacheprovider", "--lab-request",
              str(request), "--lab-scenarios", str(scenarios), "--collect-only", "-q")  # fmt: skip
    lab = pytester.runpytest_inprocess(*common, "-m", "lab")
    lab.stdout.fnmatch_lines(
        [
            "scenarios/test_s.py::test_guest",
            "scenarios/test_s.py::test_module[[]e1000[]]",
            "scenarios/test_s.py::test_module[[]rtl8139[]]",
            "3/4 tests collected (1 deselected)*",
        ]
    )
    host = pytester.runpytest_inprocess(*common, "-m", "not lab")
    host.stdout.fnmatch_lines(["test_host.py::test_host", "1/4 tests collected (3 deselected)*"])


def test_the_lab_scenarios_are_all_marked(pytester: pytest.Pytester) -> None:
    """The lab's own scenarios, collected as make unit collects them: none is left unmarked
    (it would fail collection), so -m "not lab" selects none of them."""
    scenarios = Path(__file__).parent / "lab"
    result = pytester.runpytest_inprocess(
        str(scenarios), "-p", "lab.pytest_plugin", "-p", "no:cacheprovider", "--collect-only",
        "-q", "-m", "not lab", "--kernel", "debian-6.1",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout.str()
