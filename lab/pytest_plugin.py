"""The pytest plugin lab scenarios run under: one guest per pytest process.

``ntalab run`` starts one pytest process per guest and hands it a
``GuestRequest`` (``--lab-request FILE``, written by the runner); run by
hand, ``pytest tests/lab --kernel K --nics SET --boot-profile P`` makes the
same request from options. Either way the guest's identity is a typed
value from start to end: the process writes a ``GuestResult``
(``results.json``, one ``CaseResult`` per test) and appends progress
events (``events.jsonl``) to the guest's directory; nothing is encoded in
test ids and parsed back.

A scenario takes ``lab_env`` (the guest) or ``nta_env`` (the guest with
NTA loaded for the run), each this test's ``LabEnv``: the one door to the
guest (``lab.labenv``). Before the test the guest is checked against its
documented state (``lab.testbed``: NICs up with their addresses and
neighbours, nothing left over; with ``nta_env``, NTA loaded with the run's
parameters) and put back if a test before broke it, which is recorded (a
``restored`` event, the ``CaseResult``, the matrix). Every test under the
scenarios directory (``--lab-scenarios``, default the lab's ``tests/lab``)
must take one of them: the plugin marks those ``lab`` (``make unit`` runs
``-m "not lab"``, ``ntalab run`` ``-m lab``), and fails collection over one
that takes neither, which would otherwise boot nothing and test nothing.

A scenario that takes the ``nic`` fixture runs once per NIC of the guest
(``test_x[e1000]``, ...), with that NIC's driver settings in force; one that
takes only ``lab_env`` or ``nta_env`` runs once for the guest. Tests run
under the default boot profile, and under others they name with
``@pytest.mark.boot_profiles``; on a sanitizer kernel (KASAN) only those
marked ``@pytest.mark.sanitizers`` (or ``sanitizer_only``) run. After every
test its undos run (``LabEnv``), what the kernel logged during it is
scanned for splats (a report the test expected, see
``LabEnv.expect_splat``, is the test's own), and a failure or a splat
leaves a reproducer bundle: the test's journal (``lab.journal``).

A test that fails is a finding (``Outcome.FAIL``), unless what failed was
the lab itself (an ``InfraError``: the guest did not boot or set its NICs
up, the module did not build): that test is an ``Outcome.ERROR``, and the
run's verdict says the lab could not run.

``--lab-collect FILE`` (with ``--collect-only``) writes the tests this
guest would run, as ``CollectedCase`` records, without booting anything:
how ``ntalab run`` plans shards. A request with ``cases`` runs those only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from lab import InfraError, LabError, accel, images, kbuild, paths
from lab.events import EventLog
from lab.guest import Guest, GuestSpec
from lab.guestnet import GuestNic
from lab.labenv import LabEnv
from lab.nics import nic_set
from lab.paths import new_results_dir
from lab.records import (
    ACCELS,
    BOOT_PROFILES,
    NIC_SETS,
    RESULTS,
    CaseResult,
    CollectedCase,
    EventKind,
    GuestRequest,
    GuestResult,
    Outcome,
)
from lab.testbed import RunModule, Testbed, describe

REQUEST = pytest.StashKey["GuestRequest"]()
STATE = pytest.StashKey["_Session"]()
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
FIGURES = pytest.StashKey[dict[str, str]]()
BUNDLE = pytest.StashKey[str]()
INFRA = pytest.StashKey[bool]()  # the test failed because the lab did
SPLATS = pytest.StashKey[list[str]]()  # titles of the kernel reports a test caused
ENV = pytest.StashKey[LabEnv]()  # the test's door
RESTORED = pytest.StashKey[list[str]]()  # what was put back before it

# What a scenario takes (the door), and what only the plugin's fixtures take.
DOORS = ("lab_env", "nta_env")

KMEMLEAK = "/sys/kernel/debug/kmemleak"

# The ``figure`` fixture: records a NIC's key figure for the matrix.
Figure = Callable[[GuestNic, str], None]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ntalab", "the guest lab scenarios run in")
    g.addoption("--kernel", default="debian-6.1", help="manifest name, bzImage or build tree")
    g.addoption("--nics", default="all", help=f"NIC set ({', '.join(NIC_SETS)}) or comma list")
    g.addoption("--boot-profile", default="default", choices=list(BOOT_PROFILES))
    g.addoption("--accel", default="auto", choices=list(ACCELS))
    g.addoption("--results", help="the guest's results directory (default results/<time>/<guest>)")
    g.addoption(
        "--lab-request", help="a GuestRequest written by 'ntalab run' (overrides the above)"
    )
    g.addoption(
        "--lab-collect", help="with --collect-only: write the tests this guest runs as JSON"
    )
    g.addoption(
        "--lab-scenarios",
        help="the scenarios directory: every test in it must take lab_env or nta_env "
        "(default: the lab's tests/lab)",
    )


class _Session:
    """What the plugin keeps for the process: the request, the kernel, results, events."""

    def __init__(self, request: GuestRequest, outdir: Path) -> None:
        self.request = request
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(outdir / "events.jsonl", request.id)
        self.cases: list[CaseResult] = []
        self.guest: Guest | None = None
        self.error = ""
        self.start = time.monotonic()
        self._kernel: images.Kernel | None = None

    def kernel(self) -> images.Kernel:
        """The request's kernel, fetched or built first when it is a manifest kernel."""
        if self._kernel is None:
            self._kernel = images.kernel_for(
                self.request.kernel, progress=lambda m: self.events(EventKind.PREPARE, detail=m)
            )
        return self._kernel

    def save(self) -> None:
        GuestResult(
            request=self.request,
            cases=self.cases,
            info=self.guest.info if self.guest is not None else None,
            error=self.error,
            seconds=round(time.monotonic() - self.start, 1),
        ).save(self.outdir / RESULTS)


def _request(config: pytest.Config) -> tuple[GuestRequest, Path]:
    given = config.getoption("--lab-request")
    if given:
        path = Path(given).resolve()
        return GuestRequest.load(path), path.parent
    kernel, nics = config.getoption("--kernel"), config.getoption("--nics")
    drivers = [v.driver for v in nic_set(nics)]  # an unknown NIC fails before anything boots
    req = GuestRequest(
        kernel=kernel,
        nic_set=nics,
        profile=config.getoption("--boot-profile"),
        accel=config.getoption("--accel"),
        sanitizer=images.kernel_for(kernel).features(drivers).kasan,
    )
    results = config.getoption("--results")
    out = Path(results).resolve() if results else new_results_dir() / req.dirname
    return req, out


def pytest_configure(config: pytest.Config) -> None:
    given = config.getoption("--lab-request", None)
    if given:
        kmod = GuestRequest.load(Path(given)).kmod
        if kmod:  # a bisect step's module, for every build and read, from collection on
            paths.use_kmod(Path(kmod))
    config.addinivalue_line("markers", "lab: takes lab_env or nta_env: boots a guest (added)")
    config.addinivalue_line("markers", "boot_profiles(*names): also run under these boot profiles")
    config.addinivalue_line("markers", "sanitizers: also run on sanitizer (KASAN) kernels")
    config.addinivalue_line(
        "markers",
        "investigation(name): a study, not part of the matrix: run only when -k names it",
    )
    config.addinivalue_line("markers", "sanitizer_only: run on sanitizer kernels only")
    config.addinivalue_line(
        "markers",
        "nic_variants(*names): on these NIC variants only (what no driver's path changes)",
    )
    config.addinivalue_line(
        "markers",
        "last: run after every other test of the guest (of each part of it, where a "
        "sharded plan splits its scenarios: a check of the whole boot)",
    )


def _session(config: pytest.Config) -> _Session:
    if STATE not in config.stash:
        try:
            req, out = _request(config)
        except LabError as e:
            raise pytest.UsageError(str(e)) from None
        config.stash[STATE] = _Session(req, out)
    return config.stash[STATE]


def _is_lab(item: pytest.Item) -> bool:
    return item.get_closest_marker("lab") is not None


def _scenarios(config: pytest.Config) -> Path | None:
    given = config.getoption("--lab-scenarios")
    if given:
        return Path(given).resolve()
    try:
        return paths.sources().scenarios.resolve()
    except InfraError:  # an installed lab without its sources: no scenarios to hold
        return None


def mark_scenarios(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that takes a door is a lab scenario (marked ``lab``); a test in the
    scenarios directory that takes none fails collection."""
    scenarios = _scenarios(config)
    doorless = []
    for item in items:
        if set(getattr(item, "fixturenames", ())) & set(DOORS):
            item.add_marker(pytest.mark.lab)
        elif scenarios is not None and item.path.resolve().is_relative_to(scenarios):
            doorless.append(item.nodeid)
    if doorless:
        raise pytest.UsageError(
            f"tests in the scenarios directory {scenarios} that take neither "
            f"{' nor '.join(DOORS)} (a scenario reaches its guest through one): "
            + ", ".join(doorless)
        )


@pytest.hookimpl(tryfirst=True)  # before -m selects: the mark is ours to add
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the scenarios, then keep the lab tests this guest runs (its boot profile, its
    kind of kernel, the cases it was asked for), last ones last."""
    mark_scenarios(config, items)
    lab = [i for i in items if _is_lab(i)]
    if not lab:
        return
    state = _session(config)
    sanitizer = state.request.sanitizer
    asked = set(state.request.cases)
    unknown = asked - {case_id(i) for i in lab}
    if unknown:
        raise pytest.UsageError(
            f"the plan names tests that are not there (plan again): {', '.join(sorted(unknown))}"
        )
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        if _is_lab(item):
            marker = item.get_closest_marker("boot_profiles")
            profiles = {"default", *(marker.args if marker else ())}
            wanted = state.request.profile in profiles
            if sanitizer:
                wanted = wanted and (
                    item.get_closest_marker("sanitizers") is not None
                    or item.get_closest_marker("sanitizer_only") is not None
                )
            elif item.get_closest_marker("sanitizer_only") is not None:
                wanted = False
            if asked:
                wanted = wanted and case_id(item) in asked
            studied = item.get_closest_marker("investigation")
            if studied is not None:
                wanted = wanted and studied.args[0] in config.getoption("keyword")
            variants = item.get_closest_marker("nic_variants")
            callspec = getattr(item, "callspec", None)
            if variants is not None and callspec is not None and "nic" in callspec.params:
                wanted = wanted and callspec.params["nic"] in variants.args
            (keep if wanted else drop).append(item)
        else:
            keep.append(item)
    keep.sort(key=lambda i: i.get_closest_marker("last") is not None)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    path = session.config.getoption("--lab-collect")
    if path:
        cases = [_collected(i) for i in session.items if _is_lab(i)]
        ids = [c.id for c in cases]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:  # two scenario files of one name, in different dirs
            raise pytest.UsageError(f"tests of the same name in two files: {', '.join(twice)}")
        Path(path).write_text(json.dumps([asdict(c) for c in cases]) + "\n")


def case_id(item: pytest.Item) -> str:
    """A test's id in a plan: its file's name and its name (``test_nta.py::test_x[e1000]``).

    Not pytest's node id, which is relative to a rootdir pytest derives from
    every path on its command line (the request file's too): the plan and
    each shard's run must name a test alike wherever they run.
    """
    return f"{item.path.name}::{item.name}"


def _collected(item: pytest.Item) -> CollectedCase:
    callspec = getattr(item, "callspec", None)
    nic = callspec.params.get("nic") if callspec is not None else None
    scenario = getattr(item, "originalname", item.name).removeprefix("test_")
    last = item.get_closest_marker("last") is not None
    return CollectedCase(case_id(item), scenario + (f".{nic}" if nic else ""), last)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``nic`` runs once per NIC of the guest."""
    if "nic" in metafunc.fixturenames:
        names = list(_session(metafunc.config).request.nic_names)
        metafunc.parametrize("nic", names, ids=names, indirect=True)


@pytest.fixture(scope="session")
def guest_request(pytestconfig: pytest.Config) -> GuestRequest:
    return _session(pytestconfig).request


@pytest.fixture(scope="session")
def results_dir(pytestconfig: pytest.Config) -> Path:
    return _session(pytestconfig).outdir


@pytest.fixture(scope="session")
def lab_testbed(pytestconfig: pytest.Config) -> Iterator[Testbed]:
    """The guest, booted once for all of its tests (a stalled boot retried once), its NICs
    set up. The plugin's own: a scenario reaches the guest through lab_env or nta_env."""
    state = _session(pytestconfig)
    req = state.request
    kernel = state.kernel()
    spec = GuestSpec(
        kernel=kernel,
        nics=nic_set(req.nic_set),
        accel=accel.choose(req.accel),
        append=BOOT_PROFILES[req.profile],
        name=f"ntalab-{req.guest_no}",
        guest_no=req.guest_no,
    )
    state.events(EventKind.BOOT, detail=f"{kernel.release}, {spec.accel.name}")
    guest = Guest(spec, state.outdir)
    state.guest = guest
    try:
        with guest:
            info = guest.info
            assert info is not None
            state.events(
                EventKind.BOOTED,
                detail=f"{info.boot_s:.0f}s",
                # How the attempt retried ended (a stall, a splat), if one was.
                outcome=info.retries[0].outcome if info.retries else "",
            )
            if guest.features.kasan != req.sanitizer:
                raise InfraError(
                    f"kernel {kernel.name} {'has' if guest.features.kasan else 'lacks'} KASAN, "
                    "unlike when its tests were planned: plan again"
                )
            try:
                bed = Testbed.up(guest, kernel, req.nic_set, state.events)
            except InfraError:
                raise
            except LabError as e:  # nothing of NTA's runs yet: the lab's own failure
                raise InfraError(f"the guest's NICs did not come up: {e}") from e
            if guest.features.kmemleak:
                # As syzkaller does: no scan on its own, and what the boot leaked
                # forgotten; the leak check scans at the end (tests/lab/test_sanitizers.py).
                bed.cmd(f"echo scan=off > {KMEMLEAK}; echo clear > {KMEMLEAK}")
            yield bed
            bed.close()
    except LabError as e:
        state.error = str(e)
        raise


@pytest.fixture(scope="session")
def nta_loaded(pytestconfig: pytest.Config, lab_testbed: Testbed) -> Iterator[RunModule]:
    """NTA built for the guest's kernel (W=1, warning-free) and loaded, serving every NIC
    from load on (``attach=``), defaults otherwise: the run's module, part of the
    documented state from then on. At the end no chunk may have leaked. The plugin's
    own: a scenario takes nta_env."""
    bed = lab_testbed
    built = kbuild.build(bed.kernel)
    if built.module is None:
        raise InfraError(f"NTA did not build: {built.log.read_text()[-3000:]}")
    assert built.status is kbuild.BuildStatus.OK, built.warnings  # W=1 warnings: the code's
    attach = ",".join(n.iface for n in bed.nics)
    yield bed.load_run_module(built.module, f"attach={attach}")
    end = "the run's end"
    found = bed.restore(with_module=True)  # the leak check needs what the last test broke back
    if found:
        _session(pytestconfig).events(
            EventKind.RESTORED, test=end, detail=describe(found, bed.last_test)
        )
    with LabEnv(bed, end) as env:
        env.quiesced()
    bed.nta.unload(bounce=bed.nics)


def _door(request: pytest.FixtureRequest, bed: Testbed, with_module: bool) -> LabEnv:
    """The test's door, once the guest is in its documented state: put back, and recorded,
    if a test before broke it."""
    found = bed.restore(with_module)
    if found:
        text = describe(found, bed.last_test)
        request.node.stash.setdefault(RESTORED, []).append(text)
        _session(request.config).events(EventKind.RESTORED, test=request.node.name, detail=text)
    env: LabEnv = request.node.stash[ENV]
    return env


@pytest.fixture
def lab_env(request: pytest.FixtureRequest, lab_testbed: Testbed) -> LabEnv:
    """This test's door to the guest (``lab.labenv.LabEnv``), the guest in its documented
    state: every lab NIC up with its address and neighbour, nothing left over."""
    return _door(request, lab_testbed, with_module=False)


@pytest.fixture
def nta_env(request: pytest.FixtureRequest, lab_testbed: Testbed, nta_loaded: RunModule) -> LabEnv:
    """This test's door to the guest, as ``lab_env``, and NTA loaded with the run's
    parameters, each at its value (``env.module``)."""
    return _door(request, lab_testbed, with_module=True)


@pytest.fixture
def nic(request: pytest.FixtureRequest) -> GuestNic:
    """One NIC of the guest, with its variant's driver settings in force (a scenario
    taking it takes a door too: lab_env or nta_env)."""
    env = request.node.stash.get(ENV, None)
    if env is None:
        raise pytest.UsageError(f"{request.node.nodeid} takes nic without lab_env or nta_env")
    name: str = request.param
    nic: GuestNic = env.with_driver_settings(next(n for n in env.nics if n.name == name))
    return nic


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Figure:
    """Records a NIC's key figure for the matrix, once its checks passed."""

    def record(nic: GuestNic, text: str) -> None:
        request.node.stash.setdefault(FIGURES, {})[nic.name] = text

    return record


@pytest.fixture(autouse=True)
def _lab_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around every lab test: its door, its undos when it ends, then the kernel log scanned,
    a bundle if it failed."""
    if not set(request.fixturenames) & set(DOORS):
        yield
        return
    bed: Testbed = request.getfixturevalue("lab_testbed")
    name = request.node.name
    with LabEnv(bed, name) as env:
        request.node.stash[ENV] = env
        try:
            yield
        finally:
            bed.last_test = name
    # No dmesg.log per test (half a second each under TCG): kmsg.log streams the
    # kernel log all along, and a bundle saves dmesg.log as it is written.
    splats = env.unexpected_splats()
    call = request.node.stash.get(REPORTS, {}).get("call")
    request.node.stash[SPLATS] = [s.name for s in splats]
    if splats or (call is not None and call.failed):
        reason = "\n".join(map(str, splats)) or (call.longreprtext if call else "")
        bundle = env.keep_reproducer(name, reason, splats)
        request.node.stash[BUNDLE] = str(bundle)
        print(f"\nreproducer: ntalab repro {bundle}")
    # The titles first (the matrix shows the first line), then each whole report.
    assert not splats, f"kernel splats: {'; '.join(s.name for s in splats)}\n\n" + "\n\n".join(
        s.report() for s in splats
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _is_lab(item):
        _session(item.config).events(EventKind.TEST, test=item.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keeps each phase's report; once the last is in, records the test's CaseResult."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    if call.excinfo is not None and call.excinfo.errisinstance(InfraError):
        item.stash[INFRA] = True
    if report.when == "teardown" and _is_lab(item):
        state = _session(item.config)
        case = _case(item)
        state.cases.append(case)
        state.save()  # as it goes: a crash later leaves what ran
        passed = case.outcome is Outcome.PASS
        detail = "; ".join(case.figures.values()) if passed else case.message
        state.events(EventKind.DONE, test=item.name, outcome=case.outcome, detail=detail)
    return report


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300]
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr).splitlines()[-1][:300] if report.longrepr else ""


def _figures(item: pytest.Item) -> dict[str, str]:
    figures: dict[str, str] = item.stash.get(FIGURES, {})
    return dict(figures)


def _case(item: pytest.Item) -> CaseResult:
    reports = item.stash.get(REPORTS, {})
    outcome, message = Outcome.PASS, ""
    for when in ("setup", "call", "teardown"):
        r = reports.get(when)
        if r is None:
            continue
        if r.skipped:
            outcome, message = Outcome.SKIP, _message(r)
        elif r.failed:
            outcome = Outcome.ERROR if item.stash.get(INFRA, False) else Outcome.FAIL
            message = _message(r)
            break
    callspec = getattr(item, "callspec", None)
    nic = callspec.params.get("nic") if callspec is not None else None
    name = getattr(item, "originalname", item.name)
    restored: list[str] = item.stash.get(RESTORED, [])
    return CaseResult(
        scenario=name.removeprefix("test_"),
        nic=nic,
        outcome=outcome,
        seconds=round(sum(r.duration for r in reports.values()), 1),
        message=message,
        figures=_figures(item),
        repro=item.stash.get(BUNDLE, ""),
        splats=item.stash.get(SPLATS, []),
        restored="; ".join(restored),
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None or session.config.getoption("--lab-collect"):
        return
    state.save()
    state.events(EventKind.GUEST_DONE, outcome=Outcome.ERROR if state.error else Outcome.PASS)
    state.events.close()
