"""What only the sanitizer kernels can say: a planted use-after-free is caught, and after
everything the guest ran, kmemleak finds nothing NTA leaked.

Both run last in a guest (the planted bug taints its kernel; the leak scan
covers what every test before it did), on sanitizer kernels only.
"""

from __future__ import annotations

import pytest

from lab import repro
from lab.labenv import LabEnv
from lab.pytest_plugin import KMEMLEAK, Figure

# As syzkaller: kmemleak reports an object only once two scans, some seconds
# apart, found no reference to it, and only objects older than 5 s
# (MSECS_MIN_AGE in mm/kmemleak.c): one wait of that age between the scans.
LEAK_SCAN_WAIT_S = 5


@pytest.mark.lab
@pytest.mark.sanitizer_only
@pytest.mark.last
def test_a_planted_use_after_free_is_caught(nta: LabEnv, figure: Figure) -> None:
    """fault_uaf_on_close=1 makes NTA read a reader's state after freeing it at close:
    KASAN reports it, naming NTA's release path. The test leaves a reproducer bundle
    that ``ntalab repro --no-shell`` replays to the same report."""
    nic = nta.use(nta.nics[0])
    nta.set_param("fault_uaf_on_close", 1)
    nta.cmd("sh -c ': < /dev/nta'")  # a reader opens and closes: the planted read
    reports = nta.expect_splat("kasan")
    assert "use-after-free" in reports[0].title and "nta_" in reports[0].title, reports
    assert nta.journal is not None
    # Expected, so no failure writes it: the journal so far (module, parameter, command).
    bundle = repro.write(
        nta, f"planted-uaf-{nic.name}", nta.journal, str(reports[0]), nta.outdir.parent / "repro",
        splats=reports,
    )  # fmt: skip
    figure(nic, f"{reports[0].title}; bundle {bundle.name}")


@pytest.mark.lab
@pytest.mark.sanitizer_only
@pytest.mark.last
def test_nothing_leaked(nta: LabEnv) -> None:
    """NTA unloaded after every scenario of the guest, kmemleak scans (twice, as syzkaller
    does): no unreferenced object."""
    if nta.nta.loaded is not None:
        nta.quiesced()
        nta.nta.unload(bounce=nta.nics)
    nta.cmd(f"echo scan > {KMEMLEAK}; sleep {LEAK_SCAN_WAIT_S}; echo scan > {KMEMLEAK}",
            timeout=300)  # fmt: skip
    leaks = nta.cmd(f"cat {KMEMLEAK}").stdout
    assert "unreferenced object" not in leaks, leaks[:4000]
