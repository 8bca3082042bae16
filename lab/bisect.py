"""``ntalab bisect GOOD BAD -- SCENARIO``: the first commit that broke a scenario.

``git bisect run`` over one of two histories:

- this repository's (by default): at each step NTA is built from that
  commit's ``kmod/`` and the scenario runs from the current lab against it
  (the guests build and read the module from there: ``GuestRequest.kmod``);
- a kernel's (``-k`` names a kernel git tree): at each step that commit of
  the kernel is built with the lab's config (virtme-ng's minimal config and
  the lab's fragments, as the sanitizer kernels are), in one build directory
  kept from step to step, NTA from the current lab against it, and the
  scenario runs on that kernel.

A step runs the scenario ``--repeat`` times, each in fresh guests, and is bad
at its first failure (a flaky regression needs several); a step whose module
(or kernel) does not build is skipped (exit 125), and so is one whose guests
never ran a test. ``--probe CMD`` runs a command of the developer's instead
of the scenario: ``$NTA_KO`` the module built, ``$NTA_KERNEL`` the kernel,
``$NTA_RUN`` the repetition; exit 0 good, 125 skip, else bad.

Nothing of the user's checkout changes: the bisection runs in a linked
worktree of its own (git keeps bisect state per worktree), reset and removed
at the end, on Ctrl-C too. ``git bisect run`` runs the current lab as the
step (``python -P -m lab.bisect STEP``), never the commit's own ``lab/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lab import LabError, UsageError, images, kbuild, paths, plan, runner
from lab.records import Verdict
from lab.wait import wait_until

Print = Callable[[str], None]
STEP_FILE = "step.json"
SKIP = 125  # git bisect run: this commit cannot be tested
STOP_WAIT_S = 90.0  # for a step to stop its guests after an interrupt
_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit$", re.M)


@dataclass(frozen=True)
class Step:
    """What every step of one bisection does, written once for ``git bisect run``."""

    mode: Literal["module", "kernel"]
    kernel: str  # module mode: the guest kernel (manifest name or build tree)
    nic_set: str
    accel: str
    times: int
    pytest_args: list[str]
    out: str  # the bisection's results directory
    probe: str = ""  # a shell command run instead of the scenario
    fragments: list[str] = field(default_factory=list)  # kernel mode: the lab's config

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Step:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class Outcome:
    first_bad: str  # the commit, "" if git could not name one
    candidates: list[str]  # when skipped commits leave several
    log: Path  # git bisect log


class Skip(Exception):
    """This commit cannot be tested (its module or kernel does not build)."""


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def is_kernel_tree(path: Path) -> bool:
    """A kernel's git tree (``-k`` of the kernel mode), not a build tree or a bzImage."""
    return (
        path.is_dir()
        and (path / ".git").exists()
        and (path / "Kconfig").is_file()
        and (path / "Makefile").is_file()
    )


def lab_fragments() -> list[str]:
    """The lab's kernel config: the fragments of the manifest's built kernels."""
    for e in images.load_manifest().values():
        if isinstance(e, images.SourceEntry):
            return list(e.fragments)
    raise LabError("the manifest has no built kernel to take the lab's config fragments from")


# -- the bisection ------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """What is bisected: a repository's top directory, and two of its commits."""

    top: Path
    good: str
    bad: str

    @classmethod
    def of(cls, repo: Path, good: str, bad: str) -> Range:
        """Checked before anything is made: a typo costs nothing."""
        try:
            top = Path(git(repo, "rev-parse", "--show-toplevel"))
        except LabError as e:
            raise UsageError(f"{repo} is not a git checkout: {e}") from None
        commits = []
        for name, rev in (("GOOD", good), ("BAD", bad)):
            try:
                commits.append(git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"))
            except LabError:
                raise UsageError(f"{name} {rev!r} is no commit of {top}") from None
        return cls(top, *commits)


def bisect(span: Range, step: Step, say: Print = print) -> Outcome:
    """``git bisect run`` of ``step`` over ``span``, in a worktree of its own; the repository
    as it was, whatever happens."""
    top, good_c, bad_c = span.top, span.good, span.bad
    out = Path(step.out)
    out.mkdir(parents=True, exist_ok=True)
    step.save(out / STEP_FILE)
    tmp = Path(tempfile.mkdtemp(prefix="ntalab-bisect-"))
    tree = tmp / "tree"
    git(top, "worktree", "add", "--detach", str(tree), bad_c)
    term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        say(git(tree, "bisect", "start", bad_c, good_c))
        text = _run(tree, out, say)
        log = out / "bisect.log"
        log.write_text(git(tree, "bisect", "log") + "\n")
    finally:
        signal.signal(signal.SIGTERM, term)
        with contextlib.suppress(LabError):
            git(tree, "bisect", "reset", "--quiet")
        with contextlib.suppress(LabError):
            git(top, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
        git(top, "worktree", "prune")
    first = _FIRST_BAD.search(text)
    if first:
        return Outcome(first[1], [], log)
    listed = text.partition("The first bad commit could be any of:")[2]
    return Outcome("", re.findall(r"^([0-9a-f]{40})$", listed, re.M), log)


def _run(tree: Path, out: Path, say: Print) -> str:
    """``git bisect run`` with the current lab as the step; its output, printed as it comes."""
    env = dict(os.environ, PYTHONPATH=str(paths.IMPORT_ROOT))
    argv = [
        "git", "-C", str(tree), "bisect", "run",
        sys.executable, "-P", "-m", "lab.bisect", str(out / STEP_FILE),
    ]  # fmt: skip
    # A session of its own: an interrupt reaches the step (and its guests) from here,
    # after which the worktree is removed.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            say(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    return "".join(lines)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT to git and the step (whose runner stops its guests, and which stops its probe);
    whatever of them is left after STOP_WAIT_S is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(LabError):
        wait_until(lambda: not _alive(proc), STOP_WAIT_S, "the bisection's step to stop", 0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _alive(proc: subprocess.Popen[str]) -> bool:
    """Whether anything of ``proc``'s process group is still running."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- one step (python -m lab.bisect STEP, run by git bisect run in the worktree) ----------


def run_step(step: Step, tree: Path, say: Print = print) -> int:
    """Test the commit checked out in ``tree``: 0 good, 1 bad, 125 skip."""
    commit = git(tree, "log", "-1", "--format=%h %s")
    out = Path(step.out) / "steps" / commit.split()[0]
    out.mkdir(parents=True, exist_ok=True)
    try:
        kernel, kmod, module = _prepare(step, tree, out, say)
    except Skip as e:
        say(f"step {commit}: skip: {e}")
        return SKIP
    if step.probe:
        verdict, detail = _probe(step, tree, kernel, module)
    else:
        verdict, detail = _scenario(step, kernel, kmod, out, say)
    say(f"step {commit}: {verdict}{f': {detail}' if detail else ''}")
    return {"good": 0, "bad": 1, "skip": SKIP}[verdict]


def _prepare(
    step: Step, tree: Path, out: Path, say: Print
) -> tuple[images.Kernel, Path | None, Path]:
    """The kernel to run on, NTA's sources (None: the current lab's) and its module, built."""
    if step.mode == "kernel":
        kernel = _build_kernel(step, tree, out, say)
        kmod = None
    else:
        kmod = tree / "kmod"
        if not (kmod / "Kbuild").is_file():
            raise Skip("no kmod/Kbuild at this commit")
        kernel = images.kernel_for(step.kernel, progress=say)
    built = kbuild.build(kernel, src=kmod)
    if built.module is None:
        errors = [ln for ln in built.log.read_text(errors="replace").splitlines() if "error" in ln]
        raise Skip(f"NTA does not build ({built.log}): {'; '.join(errors[:2])}")
    return kernel, kmod, built.module


def _build_kernel(step: Step, tree: Path, out: Path, say: Print) -> images.Kernel:
    """This commit of the kernel, configured as the lab's kernels are, built on top of the
    last step's build."""
    build = Path(step.out) / "kernel-build"
    build.mkdir(exist_ok=True)
    entry = images.SourceEntry("bisect", "", "", tuple(step.fragments), "-bisect")
    try:
        release = images.build_tree(entry, tree, build, out / "kernel-build.log", say)
    except (LabError, OSError) as e:
        raise Skip(f"the kernel does not build: {str(e).splitlines()[0]}") from None
    say(f"kernel {release} built in {build}")
    return images.resolve(str(build))


def _probe(step: Step, tree: Path, kernel: images.Kernel, module: Path) -> tuple[str, str]:
    env = dict(os.environ, NTA_KO=str(module), NTA_KERNEL=str(kernel.headers or kernel.vmlinuz))
    for n in range(1, step.times + 1):
        rc = _run_probe(step.probe, tree, env | {"NTA_RUN": str(n)})
        if rc == SKIP:
            return "skip", f"the probe skipped it (run {n})"
        if rc != 0:
            return "bad", f"the probe failed on run {n} of {step.times} (exit {rc})"
    return "good", f"{step.times} of {step.times} runs passed"


def _run_probe(command: str, cwd: Path, env: dict[str, str]) -> int:
    """The probe, in a process group of its own that goes with it when the step is stopped
    (a signal to a shell's group can land between its fork and its child's exec, and be
    lost there)."""
    proc = subprocess.Popen(command, shell=True, cwd=cwd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _scenario(
    step: Step, kernel: images.Kernel, kmod: Path | None, out: Path, say: Print
) -> tuple[str, str]:
    name = step.kernel if step.mode == "module" else str(kernel.headers)
    requests = plan.guests(
        [name], [step.nic_set], ["default"], step.accel, runner.sanitizer_kernels([name]), kmod
    )
    done = runner.run_repeated(
        requests, out, jobs=1, times=step.times, until_fail=True, pytest_args=step.pytest_args,
        say=say,
    )  # fmt: skip
    last = done.attempts[-1]
    if done.verdict is Verdict.FINDING:
        return "bad", "; ".join(last.splats + last.failed) + f" (run {len(done.attempts)})"
    if done.verdict is Verdict.LAB:  # a guest that never booted, a selection that ran nothing
        return "skip", "; ".join(e for a in done.attempts for e in a.errors)
    return "good", f"{len(done.attempts)} of {step.times} runs passed"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -P -m lab.bisect STEP.json (run by 'ntalab bisect')", file=sys.stderr)
        return 128  # git bisect run: abort
    try:
        return run_step(Step.load(Path(args[0])), Path.cwd())
    except LabError as e:
        print(f"ntalab bisect: {e}", file=sys.stderr)
        return 128  # the lab broke, not the commit: git stops the bisection


if __name__ == "__main__":
    raise SystemExit(main())
