"""Lab tests: one guest per (kernel, NIC set), booted once and shared by its tests.

Every lab test is parametrized over the kernels and NIC sets given on the
command line. After each test the guest's kernel log is saved and scanned:
a splat fails the test that caused it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import accel, images, judge, nics, repro, scenarios
from lab.guest import BOOT_PROFILES, Guest, GuestNic, GuestSpec
from lab.labenv import LabEnv

DEFAULT_KERNELS = ["debian-6.1"]
DEFAULT_NIC_SETS = ["all"]
_guest_numbers = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "boot_profiles(*names): also run under these boot profiles when selected"
    )


def guest_id(kernel: str, nic_set: str, profile: str) -> str:
    return f"{kernel}/{nic_set}" + ("" if profile == "default" else f"/{profile}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One guest per (kernel, NIC set, boot profile) asked for on the command line.

    A test runs under the default profile, and under the other profiles it
    names with @pytest.mark.boot_profiles, when those are selected.
    """
    if "lab_env" not in metafunc.fixturenames:
        return
    kernels = metafunc.config.getoption("--kernel") or DEFAULT_KERNELS
    sets = metafunc.config.getoption("--nic-set") or DEFAULT_NIC_SETS
    profiles = metafunc.config.getoption("--boot-profile") or ["default"]
    for name in profiles:
        if name not in BOOT_PROFILES:
            raise pytest.UsageError(f"unknown boot profile {name!r}: {', '.join(BOOT_PROFILES)}")
    marker = metafunc.definition.get_closest_marker("boot_profiles")
    wanted = {"default", *(marker.args if marker else ())}
    combos = [c for c in itertools.product(kernels, sets, profiles) if c[2] in wanted]
    metafunc.parametrize(
        "lab_env", combos, ids=[guest_id(*c) for c in combos], indirect=True, scope="session"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist (--dist loadgroup), all tests of one guest go to one worker.

    First: xdist turns the marks into groups in its own hook, which must see them.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "lab_env" in callspec.params:
            item.add_marker(pytest.mark.xdist_group(guest_id(*callspec.params["lab_env"])))


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
    kernel_name, set_name, profile = request.param
    kernel = kernel_for(kernel_name)
    number = next(_guest_numbers)
    spec = GuestSpec(
        kernel=kernel,
        nics=nics.nic_set(set_name),
        accel=lab_accel,
        append=BOOT_PROFILES[profile],
        name=f"ntalab-{number}",
        guest_no=number,
    )
    outdir = results_dir / guest_id(kernel_name, set_name, profile).replace("/", "_")
    with Guest(spec, outdir) as guest:
        env = LabEnv(guest, guest.setup_nics(promisc=True), kernel, set_name, outdir)
        yield env


@pytest.fixture
def figure(record_property: Callable[[str, object], None]) -> Callable[[GuestNic, str], None]:
    """Records a NIC variant's key figure for the matrix, once its checks passed."""

    def record(gn: GuestNic, text: str) -> None:
        record_property(f"figure:{gn.plan.variant.name}", text)

    return record


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
            env,
            scenarios.plain_test_id(request.node.nodeid),
            env.pcaps[first_pcap:],
            reason,
            results_dir / "repro",
        )
        print(f"\nreproducer: ntalab repro {bundle}")
    assert not splats, "kernel splats:\n" + "\n".join(map(str, splats))
