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
    lines = got.stdout.splitlines()
    figures = {
        k: int(v) for line in (lines[0], lines[-1]) for k, v in re.findall(r"(\w+) (\d+)", line)
    }
    assert figures["steps"] == STEPS
    assert figures["allocated"] == figures["freed"] + figures["leaked"]
    assert figures["shared"] == figures["released"]
    # The run reached every kind of event, not just the easy ones: frames
    # shared with several readers, second commits, other readers' commits,
    # and every reason a commit is refused.
    keys = ("shared", "multi", "copies", "chains", "replays", "twice", "others")
    for key in (*keys, "node", "offset", "state", "generation", "reserved", "pool"):
        assert figures[key] > 100, (key, got.stdout)
    readers = re.findall(
        r"^reader\d published (\d+) committed (\d+) returned (\d+)$", got.stdout, re.M
    )
    assert len(readers) == 3, got.stdout
    for counts in readers:
        assert all(int(n) > 100 for n in counts), got.stdout


# A frame's pieces and its hold are checked after every event, so one broken
# promise may show first in any of them: each regex names where it may.
LOST = "lost chunk|shared with .*, held by"
HOLD = "NTA's hold|pool: shared|a frame's page"


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
            "the commit check ignores the reader's bit: any reader of the chunk commits it",
            ("!(c->readers & (1U << user))", "!(c->readers && user < NTA_POOL_READERS)"),
            "committed chunk .* twice|committed chunk .* of|an old record committed",
        ),
        (
            "a reader's commit or close clears every reader's bit",
            ("c->readers &= ~(1U << user);", "c->readers = 0; (void)user;"),
            f"{LOST}|{HOLD}|nta_chunk_reclaimable",
        ),
        (
            "NTA's hold dropped at the first reader's release, not the last",
            ("return !c->readers;", "return true;"),
            HOLD,
        ),
        (
            "NTA's hold kept after the last reader's release: the frame never comes back",
            ("return !c->readers;", "return false;"),
            HOLD,
        ),
        (
            "a reader set too narrow for NTA_POOL_READERS slots (its static_assert gone)",
            ("__u16 readers;", "__u8 readers;"),
            LOST,
        ),
        (
            "a commit naming no pool checked for its node first",
            (
                "\tif (!nodes)\n\t\treturn NTA_BAD_POOL;\n"
                "\tif (cm->node >= node_count)\n\t\treturn NTA_BAD_NODE;\n",
                "\tif (cm->node >= node_count)\n\t\treturn NTA_BAD_NODE;\n"
                "\tif (!nodes)\n\t\treturn NTA_BAD_POOL;\n",
            ),
            "want reason 7",
        ),
        (
            "a commit's reserved field checked after its pool",
            (
                "\tif (cm->reserved)\n\t\treturn NTA_BAD_RESERVED;\n"
                "\tif (!nodes)\n\t\treturn NTA_BAD_POOL;\n",
                "\tif (!nodes)\n\t\treturn NTA_BAD_POOL;\n"
                "\tif (cm->reserved)\n\t\treturn NTA_BAD_RESERVED;\n",
            ),
            "want reason 5",
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
    header = header.replace(change[0], change[1], 1)
    (include / "nta_chunk.h").write_text(re.sub(r"static_assert\(.*?\);\n", "", header, flags=re.S))
    exe = build(include, tmp_path / "mutant")

    failed = [got for seed in SEEDS if (got := run(exe, seed)).returncode != 0]
    assert failed, f"{bug}: not caught"
    assert all(got.returncode == 1 and re.search(caught, got.stderr) for got in failed), bug


def test_a_reader_set_too_narrow_does_not_build(tmp_path: Path) -> None:
    """The set of a chunk's readers must have a bit per reader slot: narrower, the header's
    static_assert stops the build (the model run above shows what it would break)."""
    include = tmp_path / "inc"
    include.mkdir()
    shutil.copy(KMOD / "nta_uapi.h", include)
    header = (KMOD / "nta_chunk.h").read_text()
    (include / "nta_chunk.h").write_text(header.replace("__u16 readers;", "__u8 readers;", 1))
    with pytest.raises(AssertionError, match="a bit per reader slot"):
        build(include, tmp_path / "narrow")
