"""A flaky bug's rate as a number: a bundle replayed N times, each in a fresh (fake) guest, and
a run of the matrix repeated with real pytest processes over scenarios that need no VM."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from lab import UsageError, images, kconfig, plan, repro, runner
from lab.guest import Guest, GuestSpec
from lab.images import Kernel
from lab.kernlog import Splat
from lab.records import Verdict
from lab.repeat import RECORD, Attempt, Repeated, repeat
from lab.steps import Command
from tests.conftest import FAKE_GUEST

SPLATS = Path(__file__).parent / "data" / "splats"
KASAN = "KASAN: use-after-free Read in rhashtable_lookup_fast"  # splats/kasan.log's title


def test_the_rate_is_counted_and_until_fail_stops_at_the_first() -> None:
    runs = {1: False, 2: True, 3: False, 4: True}
    said: list[str] = []

    def once(n: int) -> Attempt:
        return Attempt(runs[n], ["KASAN: x"] if runs[n] else [], logs=f"r{n}", seconds=1.0)

    assert repeat(once, 4, False, None, said.append).reproduced == 2
    assert said == [
        "[1/4] clean in 1s (r1)",
        "[2/4] reproduced in 1s: KASAN: x (r2)",
        "[3/4] clean in 1s (r3)",
        "[4/4] reproduced in 1s: KASAN: x (r4)",
        "reproduced 2/4",
    ]
    said.clear()
    done = repeat(once, 4, True, None, said.append)
    assert len(done.attempts) == 2
    assert said[-1] == "reproduced 1/2, stopped at the first (--until-fail) of 4"
    with pytest.raises(UsageError, match="positive"):
        repeat(once, 0, False, None, said.append)


def test_the_verdict_of_repeated_runs_is_a_finding_if_any_reproduced() -> None:
    """One run that reproduced is a finding (1) whatever the others did; else a run the lab
    could not run leaves the rate unknown (3); clean runs only pass (0)."""
    clean, found, broken = Attempt(False), Attempt(True, ["KASAN: x"]), Attempt(False, errors=["x"])
    assert Repeated(3, [clean, found, broken]).verdict is Verdict.FINDING
    assert Repeated(3, [clean, broken, clean]).verdict is Verdict.LAB
    assert Repeated(2, [clean, clean]).verdict is Verdict.PASSED


# -- ntalab repro --repeat, in a fake guest ------------------------------------------


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    """The bundle's kernel: a config with everything the lab checks, never booted."""
    config = tmp_path / "config"
    config.write_text("".join(f"{n.options[0]}=y\n" for n in kconfig.REQUIRED))
    fake = Kernel("fake", "0.0-fake", tmp_path / "vmlinuz", None, config)
    monkeypatch.setattr(images, "kernel_for", lambda spec, progress=print, manifest=None: fake)
    return fake


# A guest command that reproduces on some runs only: it prints a real KASAN report (on the
# console, where the scan reads it) on the runs its plan says, counting runs in a file.
FLAKY = """\
#!/bin/sh
n=$(($(cat {count} 2>/dev/null || echo 0) + 1))
echo $n > {count}
case " {plan} " in *" $n "*) cat {report} ;; esac
"""


def bundle(tmp_path: Path, reproduces_on: str) -> Path:
    script = tmp_path / "flaky.sh"
    script.write_text(
        FLAKY.format(count=tmp_path / "count", plan=reproduces_on, report=SPLATS / "kasan.log")
    )
    script.chmod(0o755)
    root = tmp_path / "bundle"
    root.mkdir()
    b = repro.Bundle(
        test="flaky[e1000]", kernel="fake", release="0.0-fake", nic_set="e1000", accel="tcg",
        append=[], reason="x", outdir="/results/g0", steps=[Command(str(script))],
    )  # fmt: skip
    (root / repro.BUNDLE_FILE).write_text(json.dumps(b.to_dict()))
    return root


def fake_boot(tmp_path: Path) -> Callable[[GuestSpec, Path], Guest]:
    """Each replay's guest: the fake vng, which counts its boots; no NIC (the fake guest's
    shell is the host's: nothing of it is configured)."""
    state = tmp_path / "boots"
    state.mkdir()

    def boot(spec: GuestSpec, out: Path) -> Guest:
        launcher = [str(FAKE_GUEST / "vng"), str(state), "ok"]
        return Guest(replace(spec, nics=()), out, stall_s=5.0, launcher=launcher)

    return boot


def test_a_bundle_replayed_n_times_in_fresh_guests_gives_its_rate(
    kernel: Kernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = bundle(tmp_path, "2 4")
    boot = fake_boot(tmp_path)
    rc = repro.replay(root, interactive=True, times=5, boot=boot)
    assert rc == 1
    assert len(list((tmp_path / "boots").glob("boot-*"))) == 5  # a guest per replay
    lines = capsys.readouterr().out.splitlines()
    runs = [re.sub(r" in \d+s", "", line) for line in lines if line.startswith("[")]
    assert runs == [
        f"[1/5] clean ({root}/replay-1)",
        f"[2/5] reproduced: {KASAN} ({root}/replay-2)",
        f"[3/5] clean ({root}/replay-3)",
        f"[4/5] reproduced: {KASAN} ({root}/replay-4)",
        f"[5/5] clean ({root}/replay-5)",
    ]
    assert lines[-1] == "reproduced 2/5"
    record = Repeated.load(root / repro.REPLAYS)
    assert [a.reproduced for a in record.attempts] == [False, True, False, True, False]
    assert "BUG: KASAN: use-after-free" in (root / "replay-2" / "console.log").read_text()


def test_until_fail_stops_at_the_first_replay_that_reproduces(
    kernel: Kernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = bundle(tmp_path, "3")
    assert repro.replay(root, times=10, until_fail=True, boot=fake_boot(tmp_path)) == 1
    assert len(list((tmp_path / "boots").glob("boot-*"))) == 3
    assert capsys.readouterr().out.splitlines()[-1] == (
        "reproduced 1/3, stopped at the first (--until-fail) of 10"
    )


def test_a_bundle_keeps_its_kernel_reports_whole(tmp_path: Path) -> None:
    """bundle.json carries each report's text (a bundle of an older lab has none)."""
    splats = [Splat("k.log", 4, "kasan", "BUG: KASAN: x", KASAN, start=3, end=181, text="a\nb\n")]
    root = bundle(tmp_path, "")
    data = json.loads((root / repro.BUNDLE_FILE).read_text())
    assert repro.load(root).splats == []
    data["splats"] = [asdict(s) for s in splats]
    (root / repro.BUNDLE_FILE).write_text(json.dumps(data))
    assert repro.load(root).splats == splats


# -- ntalab run --repeat, with real pytest processes ----------------------------------

SCENARIO = """
import pytest
from pathlib import Path

pytestmark = pytest.mark.lab
COUNT = Path({count!r})


def test_flaky(guest_request):
    n = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
    COUNT.write_text(str(n))
    assert n not in {fails}, f"failed on run {{n}}"
"""


def test_a_run_repeated_counts_the_runs_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    count = tmp_path / "count"
    (scenarios / "test_flaky.py").write_text(
        textwrap.dedent(SCENARIO.format(count=str(count), fails={2}))
    )
    tree = tmp_path / "tree"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(b"")
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text("6.0.0-fake\n")
    needs = [n.options[0] for n in kconfig.REQUIRED] + list(kconfig.DRIVERS.values())
    (tree / ".config").write_text("".join(f"{o}=y\n" for o in needs))
    requests = plan.guests([str(tree)], ["e1000"], ["default"], "tcg")
    built: list[list[str]] = []
    monkeypatch.setattr(runner, "build_modules", lambda kernels, _say, _kmod: built.append(kernels))
    said: list[str] = []
    out = tmp_path / "out"
    done = runner.run_repeated(requests, out, 1, 3, False, (), scenarios, said.append)
    assert built == [[str(tree)]]  # once, before the first run
    assert [a.reproduced for a in done.attempts] == [False, True, False]
    assert done.attempts[1].failed == [f"{requests[0].id}: flaky FAIL"]
    assert done.verdict is Verdict.FINDING
    assert any(line.endswith("reproduced 1/3") for line in said)
    for n in (1, 2, 3):  # each run a full results directory of its own
        assert (out / str(n) / "summary.json").is_file()
    assert Repeated.load(out / RECORD) == done
    # A selection that matches no scenario ran nothing: the lab's error, never a pass.
    nothing = runner.run_repeated(
        requests, tmp_path / "none", 1, 2, False, ["-k", "no_such"], scenarios, said.append
    )
    none_ran = ["no test ran (the selection matched none)"]
    assert [a.errors for a in nothing.attempts] == [none_ran, none_ran]
    assert nothing.verdict is Verdict.LAB
