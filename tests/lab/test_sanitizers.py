"""What only the sanitizer kernels can say: a planted use-after-free is caught, and after
everything the guest ran, kmemleak finds nothing NTA leaked.

Both run last in a guest (the planted bug taints its kernel; the leak scan
covers what every test before it did), on sanitizer kernels only.
"""

from __future__ import annotations

import pytest

from lab.scenario import KMEMLEAK, Figure, LabEnv

# As syzkaller: kmemleak reports an object only once two scans, some seconds
# apart, found no reference to it, and only objects older than 5 s
# (MSECS_MIN_AGE in mm/kmemleak.c): one wait of that age between the scans.
LEAK_SCAN_WAIT_S = 5


@pytest.mark.sanitizer_only
@pytest.mark.last
def test_a_planted_use_after_free_is_caught(nta_env: LabEnv, figure: Figure) -> None:
    """fault_uaf_on_close=1 makes NTA read a reader's state after freeing it at close:
    KASAN reports it, naming NTA's release path. The test leaves a reproducer bundle
    that ``ntalab repro --no-shell`` replays to the same report."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    env.module.set_param("fault_uaf_on_close", 1)
    env.act("sh -c ': < /dev/nta'", undo=None)  # a reader opens and closes: the planted read
    reports = env.expect_splat("kasan")
    assert "use-after-free" in reports[0].title and "nta_" in reports[0].title, reports
    # Expected, so no failure writes it: the journal so far (module, parameter, command).
    bundle = env.keep_reproducer(f"planted-uaf-{nic.name}", str(reports[0]), reports)
    figure(nic, f"{reports[0].title}; bundle {bundle.name}")


@pytest.mark.sanitizer_only
@pytest.mark.last
def test_nothing_leaked(nta_env: LabEnv) -> None:
    """NTA unloaded after every scenario of the guest, kmemleak scans (twice, as syzkaller
    does): no unreferenced object."""
    env = nta_env
    env.quiesced()
    env.module.unload()  # loaded again when the test ends: a later part of the run may need it
    scan = f"echo scan > {KMEMLEAK}; sleep {LEAK_SCAN_WAIT_S}; echo scan > {KMEMLEAK}"
    env.act(scan, undo=None, timeout=300)
    leaks = env.cmd(f"cat {KMEMLEAK}").stdout
    assert "unreferenced object" not in leaks, leaks[:4000]
