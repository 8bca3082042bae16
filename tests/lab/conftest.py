"""Lab tests: one guest per (kernel, NIC set), booted once and shared by its tests.

Every lab test is parametrized over the kernels and NIC sets given on the
command line. After each test the guest's kernel log is saved and scanned:
a splat fails the test that caused it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import accel, images, judge, nics, repro
from lab.guest import Guest, GuestSpec
from lab.labenv import LabEnv

DEFAULT_KERNELS = ["debian-6.1"]
DEFAULT_NIC_SETS = ["e1000+rtl8139"]
_guest_numbers = itertools.count()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lab_env" not in metafunc.fixturenames:
        return
    kernels = metafunc.config.getoption("--kernel") or DEFAULT_KERNELS
    sets = metafunc.config.getoption("--nic-set") or DEFAULT_NIC_SETS
    combos = list(itertools.product(kernels, sets))
    metafunc.parametrize(
        "lab_env", combos, ids=[f"{k}/{s}" for k, s in combos], indirect=True, scope="session"
    )


@pytest.fixture(scope="session")
def lab_accel(pytestconfig: pytest.Config) -> accel.Accel:
    return accel.choose(pytestconfig.getoption("--accel"))


def kernel_for(name: str) -> images.Kernel:
    """A manifest kernel is fetched when missing: a missing kernel is never a skip."""
    manifest = images.load_manifest()
    if name in manifest:
        return images.fetch(manifest[name])
    return images.resolve(name, manifest)


@pytest.fixture(scope="session")
def lab_env(
    request: pytest.FixtureRequest, results_dir: Path, lab_accel: accel.Accel
) -> Iterator[LabEnv]:
    kernel_name, set_name = request.param
    kernel = kernel_for(kernel_name)
    number = next(_guest_numbers)
    spec = GuestSpec(
        kernel=kernel,
        nics=nics.nic_set(set_name),
        accel=lab_accel,
        name=f"ntalab-{number}",
        guest_no=number,
    )
    outdir = results_dir / f"{kernel_name}_{set_name}"
    with Guest(spec, outdir) as guest:
        env = LabEnv(guest, guest.setup_nics(promisc=True), kernel, set_name, outdir)
        yield env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the item, for the fixture below."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(autouse=True)
def kernel_log_clean(request: pytest.FixtureRequest, results_dir: Path) -> Iterator[None]:
    """Fails the test if the guest's kernel log gained a splat while it ran.

    A failed test (or a splat) leaves a reproducer bundle under
    ``<results>/repro/``: ``ntalab repro`` replays it.
    """
    if "lab_env" not in request.fixturenames:
        yield
        return
    env: LabEnv = request.getfixturevalue("lab_env")
    first_pcap = len(env.pcaps)
    yield
    log = env.guest.save_dmesg()
    splats = judge.scan_files([log, env.guest.console_log.path])
    call = request.node.stash.get(REPORTS, {}).get("call")
    if splats or (call is not None and call.failed):
        reason = "\n".join(map(str, splats)) or (call.longreprtext if call else "")
        bundle = repro.write(
            env, request.node.nodeid, env.pcaps[first_pcap:], reason, results_dir / "repro"
        )
        print(f"\nreproducer: ntalab repro {bundle}")
    assert not splats, "kernel splats:\n" + "\n".join(map(str, splats))
