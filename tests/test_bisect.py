"""``ntalab bisect`` on throwaway histories built here: a module history with a planted (flaky)
regression and a commit that does not build, bisected with real module builds against
debian-6.1 and a probe in place of a guest; a kernel history bisected with a fake kernel
build. The user's repository is left exactly as it was, also when interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab import images, paths
from lab.wait import wait_until

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}  # fmt: skip

MODULE = """\
#include <linux/module.h>
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ntalab bisect test");
MODULE_INFO(ntalab_state, "{state}");
"""

# Fails on the second run of a step whose module is the regressed one: a flaky regression.
FLAKY_PROBE = """\
echo "$(git log -1 --format=%s) run $NTA_RUN" >> {calls}
if grep -q ntalab_state=regressed "$NTA_KO" && [ "$NTA_RUN" = 2 ]; then exit 1; fi
exit 0
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
        env=dict(os.environ, **GIT_ENV),
    ).stdout.strip()  # fmt: skip


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def state(repo: Path) -> dict[str, str]:
    """Everything of a repository a bisection could change."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "-q", "HEAD"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "refs": git(repo, "for-each-ref"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "dirty": (repo / "kmod" / "nta.c").read_text(),
        "bisect": str(sorted(p.name for p in (repo / ".git").glob("BISECT_*"))),
    }


@pytest.fixture
def module_history(tmp_path: Path) -> dict[str, str]:
    """good -> unrelated -> does not build -> builds again -> regression -> unrelated (bad),
    then the user's own work on a branch: a commit, an uncommitted change, an untracked file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    # The commit's own lab/ must never run as the step: the current lab's does.
    kbuild = {"kmod/Kbuild": "obj-m += nta.o\n", "lab/__init__.py": "raise SystemExit(99)\n"}
    c = {"good": commit(repo, "good", kbuild | {"kmod/nta.c": MODULE.format(state="good")})}
    c["unrelated"] = commit(repo, "unrelated", {"README": "docs\n"})
    c["broken"] = commit(repo, "does not build", {"kmod/nta.c": "this is not C\n"})
    c["fixed"] = commit(repo, "builds again", {"kmod/nta.c": MODULE.format(state="good") + "\n"})
    c["regressed"] = commit(repo, "regression", {"kmod/nta.c": MODULE.format(state="regressed")})
    c["bad"] = commit(repo, "more docs", {"README": "more docs\n"})
    git(repo, "checkout", "-q", "-b", "work", c["unrelated"])
    commit(repo, "my work", {"NOTES": "mine\n"})
    (repo / "kmod" / "nta.c").write_text("/* uncommitted */\n")
    (repo / "untracked.txt").write_text("untracked\n")
    return c | {"repo": str(repo)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Module builds in a cache of these tests' own; debian-6.1 from the user's (fetched if
    missing, as make test does)."""
    images.provide(images.load_manifest()["debian-6.1"])
    root = tmp_path_factory.mktemp("cache")
    (root / "kernels").symlink_to(paths.cache_root() / "kernels")
    return root


def ntalab(
    *args: str, cache: Path, session: bool = False, cwd: Path = paths.IMPORT_ROOT
) -> subprocess.Popen[str]:
    env = dict(os.environ, NTALAB_CACHE=str(cache), PYTHONPATH=str(paths.IMPORT_ROOT), **GIT_ENV)
    return subprocess.Popen(
        [sys.executable, "-m", "lab", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env, cwd=cwd, start_new_session=session,
    )  # fmt: skip


def bisect_module(h: dict[str, str], cache: Path, tmp_path: Path, repeat: int) -> tuple[int, str]:
    probe = tmp_path / "probe.sh"
    probe.write_text(FLAKY_PROBE.format(calls=tmp_path / "calls"))
    proc = ntalab(
        "bisect", h["good"], h["bad"], "--repo", h["repo"], "--out", str(tmp_path / "out"),
        "--repeat", str(repeat), "--probe", f"sh {probe}", cache=cache,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def test_the_first_bad_commit_is_named_and_the_repository_left_as_it_was(
    module_history: dict[str, str], cache: Path, tmp_path: Path
) -> None:
    """With 3 runs a step, the flaky regression is caught; the commit that does not build is
    skipped; nothing of the user's checkout changed."""
    repo = Path(module_history["repo"])
    before = state(repo)
    rc, out = bisect_module(module_history, cache, tmp_path, repeat=3)
    assert rc == 0, out
    assert f"first bad commit: {module_history['regressed']}" in out
    assert "regression" in out.split("first bad commit:")[1]
    assert state(repo) == before
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "regression run 2" in calls and "regression run 3" not in calls  # bad at the first
    assert not any(c.startswith("does not build") for c in calls)  # never probed
    assert (tmp_path / "out" / "bisect.log").is_file()


def test_one_run_a_step_misses_the_flaky_regression(
    module_history: dict[str, str], cache: Path, tmp_path: Path
) -> None:
    """The check above can fail: a single run never sees the regression fail, and the
    bisection blames the last commit."""
    rc, out = bisect_module(module_history, cache, tmp_path, repeat=1)
    assert rc == 0, out
    assert f"first bad commit: {module_history['bad']}" in out


def test_commits_the_lab_could_not_test_leave_candidates_and_exit_3(
    module_history: dict[str, str], cache: Path, tmp_path: Path
) -> None:
    """The first bad commit comes right after one that does not build: git cannot tell
    which of the two broke it, and the lab could not test the first (exit 3, not a pass)."""
    probe = 'case "$(git log -1 --format=%s)" in good|unrelated) exit 0;; *) exit 1;; esac'
    proc = ntalab(
        "bisect", module_history["good"], module_history["bad"], "--repo",
        module_history["repo"], "--out", str(tmp_path / "out"), "--probe", probe, cache=cache,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3, out
    listed = out.split("no single first bad commit")[1].split()
    assert {module_history["broken"], module_history["fixed"]} <= set(listed), out
    assert "first bad commit:" not in out


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_bisection_leaves_the_repository_as_it_was(
    module_history: dict[str, str], cache: Path, tmp_path: Path, signo: int
) -> None:
    repo = Path(module_history["repo"])
    before = state(repo)
    started = tmp_path / "started"
    token = f"sleep 600.{os.getpid()}{signo}"  # the probe's own process, found by it
    probe = f"touch {started}; {token}"
    proc = ntalab(
        "bisect", module_history["good"], module_history["bad"], "--repo", str(repo),
        "--out", str(tmp_path / "out"), "--probe", probe, cache=cache, session=True,
    )  # fmt: skip
    try:
        wait_until(started.exists, 300, "the first step's probe")
        os.killpg(proc.pid, signo)  # as a terminal's Ctrl-C (or a CI's SIGTERM) does
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert state(repo) == before
    left = subprocess.run(["pgrep", "-f", token], capture_output=True, text=True).stdout
    assert left == "", "the step's probe outlived the bisection"


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(repo, "one", {"a": "1"})
    for args, message in [
        (["HEAD", "HEAD", "--repo", str(repo)], "name the scenario after --"),
        (["nosuch", "HEAD", "--repo", str(repo), "--probe", "true"], "GOOD 'nosuch' is no commit"),
        (["HEAD", "HEAD", "--repo", str(repo), "--probe", "true", "--repeat", "0"], "positive"),
        (["HEAD", "HEAD", "--repo", str(tmp_path), "--probe", "true"], "is not a git checkout"),
    ]:
        proc = ntalab("bisect", *args, cache=tmp_path, cwd=tmp_path)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in out, out
    assert not (tmp_path / "results").exists()  # no results directory was made


# -- the kernel's history, with a fake kernel build ----------------------------------------

FAKE_MAKEFILE = """\
# A kernel tree's Makefile, faked: configures and "builds" in $(O); its bzImage is a
# copy of net/core/dev.c, which the bisection's probe looks at.
O ?= .
x86_64_defconfig:
\tmkdir -p $(O)
\techo CONFIG_64BIT=y > $(O)/.config
olddefconfig:
\t@true
bzImage:
\ttest ! -e BROKEN
\tmkdir -p $(O)/arch/x86/boot $(O)/include/config
\tcp net/core/dev.c $(O)/arch/x86/boot/bzImage
\techo 6.0.0-bisect > $(O)/include/config/kernel.release
\tprintf 'modules:\\n\\tprintf fake > $$(M)/nta.ko\\n' > $(O)/Makefile
modules:
\t@true
"""

FAKE_SCRIPTS_CONFIG = """\
#!/bin/sh
# The kernel's scripts/config, faked: appends what it is asked to set.
while [ $# -gt 0 ]; do
\tcase "$1" in
\t--file) f=$2; shift 2 ;;
\t--enable) echo "CONFIG_$2=y" >> "$f"; shift 2 ;;
\t--module) echo "CONFIG_$2=m" >> "$f"; shift 2 ;;
\t--disable) echo "# CONFIG_$2 is not set" >> "$f"; shift 2 ;;
\t--set-str) echo "CONFIG_$2=\\"$3\\"" >> "$f"; shift 3 ;;
\t--set-val) echo "CONFIG_$2=$3" >> "$f"; shift 3 ;;
\t*) echo "scripts/config: $1?" >&2; exit 1 ;;
\tesac
done
"""


def test_a_kernel_history_is_bisected_with_the_labs_config(tmp_path: Path) -> None:
    """-k a kernel git tree: each step builds that commit of the kernel (here faked) with
    the lab's config and NTA against it; a kernel that does not build is skipped."""
    tree = tmp_path / "linux"
    tree.mkdir()
    git(tree, "init", "-q", "-b", "master")
    (tree / "scripts").mkdir()
    (tree / "scripts/config").write_text(FAKE_SCRIPTS_CONFIG)
    (tree / "scripts/config").chmod(0o755)
    good = commit(tree, "v6.0", {"Kconfig": "", "Makefile": FAKE_MAKEFILE, "net/core/dev.c": "x\n"})
    commit(tree, "net: a cleanup", {"net/core/dev.c": "fine, cleaner\n"})
    commit(tree, "mm: breaks the build", {"BROKEN": ""})
    git(tree, "rm", "-q", "BROKEN")
    git(tree, "commit", "-q", "-m", "mm: the build fixed")
    culprit = commit(tree, "net: the regression", {"net/core/dev.c": "REGRESSED\n"})
    bad = commit(tree, "docs", {"README": "x\n"})
    before = git(tree, "rev-parse", "HEAD"), git(tree, "status", "--porcelain")
    probe = 'grep -q REGRESSED "$NTA_KERNEL/arch/x86/boot/bzImage" && exit 1; test -s "$NTA_KO"'
    cache = tmp_path / "cache"
    proc = ntalab(
        "bisect", good, bad, "-k", str(tree), "--out", str(tmp_path / "out"), "--probe", probe,
        cache=cache,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"first bad commit: {culprit}" in out
    # git tries the commit that does not build first (the middle), and skips it.
    assert re.search(r"^step \w+ mm: breaks the build: skip: the kernel does not build", out, re.M)
    assert (git(tree, "rev-parse", "HEAD"), git(tree, "status", "--porcelain")) == before
    config = (tmp_path / "out" / "kernel-build" / ".config").read_text()
    assert "CONFIG_KASAN=y" in config and 'CONFIG_LOCALVERSION="-bisect"' in config
