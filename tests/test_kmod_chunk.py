"""The module's chunk state machine and commit checks, on the host, under sanitizers.

kmod/tests/nta_chunk_test.c drives kmod/nta_chunk.h (the very header the
module builds with) through seeded random runs and checks NTA's promises
after every event. Built with gcc, AddressSanitizer and UBSan; without gcc
the test is skipped on a workstation and fails under CI (CI set). Each
mutation of the header below is a bug the module could have: the run must
catch it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import missing

KMOD = Path(__file__).resolve().parents[1] / "kmod"
TEST_C = KMOD / "tests" / "nta_chunk_test.c"
SEEDS = (1, 2, 3)
STEPS = 200_000


def build(include: Path, exe: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        missing("gcc not found: the host build of nta_chunk.h needs it")
    cc = [gcc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"]
    cc += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    built = subprocess.run(
        [*cc, "-I", str(include), "-o", str(exe), str(TEST_C)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return exe


def run(exe: Path, seed: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), str(seed), str(STEPS)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_every_promise_holds(tmp_path: Path, seed: int) -> None:
    got = run(build(KMOD, tmp_path / "nta_chunk_test"), seed)
    assert got.returncode == 0, got.stderr
    figures = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", got.stdout)}
    assert figures["steps"] == STEPS
    assert figures["allocated"] == figures["freed"] + figures["leaked"]
    # The run reached every kind of event, not just the easy ones.
    keys = ("published", "committed", "copies", "chains", "replays", "node", "offset", "state")
    for key in (*keys, "generation"):
        assert figures[key] > 100, (key, got.stdout)
    assert figures["reserved"] > 100, got.stdout


@pytest.mark.parametrize(
    ("bug", "change", "caught"),
    [
        (
            "freed while the kernel still holds the page",
            ("page_refs == 1", "page_refs >= 1"),
            "nta_chunk_reclaimable",
        ),
        (
            "freed while a reader holds it",
            ("!c->filling && !c->readers && !c->leaked", "!c->filling && !c->leaked"),
            "nta_chunk_reclaimable",
        ),
        (
            "a chunk taken for a copy freed while it is being filled (the reclaim race)",
            ("return c->busy && !c->filling && !c->readers", "return c->busy && !c->readers"),
            "nta_chunk_reclaimable|freed while being filled",
        ),
        (
            "a chunk being filled published as a received frame",
            ("c->busy && !c->filling && !c->published &&", "c->busy && !c->published &&"),
            "a chunk being filled is publishable",
        ),
        (
            "a published copy still marked filling: never freed",
            ("\tc->filling = false;\n\tc->published = true;", "\tc->published = true;"),
            "filling while used|in_use",
        ),
        (
            "stale generation accepted",
            ("c->generation != cm->generation", "0"),
            "want reason|an old record committed",
        ),
        (
            "a chunk not shared with the committer accepted",
            ("!(c->readers & (1U << user))", "!c->readers"),
            "another reader's chunk|unshared chunk|an old record committed",
        ),
        (
            "published twice in one generation",
            ("c->busy && !c->filling && !c->published &&", "c->busy && !c->filling &&"),
            "publishable",
        ),
        (
            "a new allocation keeps the old generation",
            ("c->generation++;", ""),
            "take",
        ),
    ],
)
def test_a_broken_promise_is_caught(
    tmp_path: Path, bug: str, change: tuple[str, str], caught: str
) -> None:
    include = tmp_path / "inc"
    include.mkdir()
    shutil.copy(KMOD / "nta_uapi.h", include)
    header = (KMOD / "nta_chunk.h").read_text()
    assert change[0] in header, bug
    (include / "nta_chunk.h").write_text(header.replace(change[0], change[1], 1))
    exe = build(include, tmp_path / "mutant")

    failed = [got for seed in SEEDS if (got := run(exe, seed)).returncode != 0]
    assert failed, f"{bug}: not caught"
    assert all(got.returncode == 1 and re.search(caught, got.stderr) for got in failed), bug
