"""Imports point one way, and what claims the standard library alone runs with it alone.

The lab's modules are in layers, each importing only its own or lower ones:
records (the typed values) <- host (stages that need no guest) <- guest (a
booted VM and its console) <- scenario (the test environment) <- run (the
runner, the CLI). The report stage imports the records only. The guest side
(lab.guestside, pysniff) runs in the guest's bare interpreter: standard
library only. ``ntalab --help`` and the commands in ``lab.cli.STDLIB_ONLY``
run where scapy, pexpect and pytest are not installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import cli
from lab.records import RunResult

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, tuple[str, ...]] = {
    "records": ("lab", "lab.records", "lab.steps"),
    "host": (
        "lab.paths", "lab.wait", "lab.events", "lab.kconfig", "lab.accel", "lab.images",
        "lab.kbuild", "lab.nics", "lab.kernlog", "lab.checks", "lab.symbolize",
        "lab.debuginfo", "lab.repeat", "lab.journal", "lab.traffic", "lab.report",
        "lab.effects", "lab.measurements",
    ),
    "guest": ("lab.console", "lab.guest", "lab.guestnet", "lab.spawn", "lab.nta"),
    # repro: bundles are written by the plugin as a test fails, and replayed from the CLI.
    "scenario": (
        "lab.testbed", "lab.repro", "lab.labenv", "lab.pytest_plugin", "lab.scenario",
    ),
    "run": ("lab.plan", "lab.runner", "lab.bisect", "lab.bench", "lab.cli", "lab.__main__"),
}  # fmt: skip
ONLY = {"lab.report": {"lab", "lab.records"}}  # modules held to an explicit list
GUEST_SIDE = ("lab.guestside", "pysniff")  # the guest's bare interpreter: stdlib only


def files() -> dict[str, Path]:
    """Every module of lab and pysniff, by name."""
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for pkg in ("lab", "pysniff")
        for p in (ROOT / pkg).rglob("*.py")
    }


def imports(nodes: list[ast.stmt], known: set[str], nested: bool = True) -> set[str]:
    """The modules these statements import (inside functions too, unless not ``nested``)."""
    found = set()
    for node in (n for top in nodes for n in (ast.walk(top) if nested else [top])):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
    return found


def modules() -> dict[str, set[str]]:
    """Every module of lab and pysniff, with what it imports (at any depth of its code)."""
    known = files()
    return {name: imports(ast.parse(p.read_text()).body, set(known)) for name, p in known.items()}


def layer(name: str) -> int | None:
    """The layer of a module, or of the package it is in (lab.bench.trial: lab.bench's)."""
    for n, mods in enumerate(LAYERS.values()):
        if any(name == m or (m != "lab" and name.startswith(m + ".")) for m in mods):
            return n
    return None


def third_party(name: str) -> bool:
    top = name.split(".")[0]
    return top not in sys.stdlib_module_names and top not in ("lab", "pysniff")


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points the wrong way, and every lab module no layer holds."""
    out = []
    for mod, imports in sorted(graph.items()):
        if mod.startswith(GUEST_SIDE):
            out += [
                f"{mod} (guest side) imports {i}"
                for i in sorted(imports)
                if third_party(i) or (i.startswith("lab") and not i.startswith(GUEST_SIDE))
            ]
            continue  # fmt: skip
        if not mod.startswith("lab"):
            continue
        if layer(mod) is None:
            out.append(f"{mod} is in no layer of tests/test_layers.py: put it in one")
            continue
        for i in sorted(imports):
            if mod in ONLY and (third_party(i) or i.startswith("lab")) and i not in ONLY[mod]:
                out.append(f"{mod} imports {i}: it may import only {sorted(ONLY[mod])}")
            rank = layer(i)
            if rank is not None and rank > (layer(mod) or 0):
                out.append(f"{mod} ({list(LAYERS)[layer(mod) or 0]}) imports {i} "
                           f"({list(LAYERS)[rank]})")  # fmt: skip
    return out


def closure(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    """What importing ``start`` may import, through lab and pysniff."""
    seen, todo = set(), list(start)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += graph.get(mod, set())
        if "." in mod:
            todo.append(mod.rsplit(".", 1)[0])  # a package's __init__ runs first
    return seen


def test_imports_point_one_way() -> None:
    assert violations(modules()) == []


@pytest.mark.parametrize(
    ("planted", "found"),
    [
        (("lab.records", "lab.guest"), "lab.records (records) imports lab.guest (guest)"),
        (("lab.report", "lab.nics"), "lab.report imports lab.nics: it may import only"),
        (("lab.checks", "lab.guestnet"), "lab.checks (host) imports lab.guestnet (guest)"),
        (("lab.repro", "lab.runner"), "lab.repro (scenario) imports lab.runner (run)"),
        (("lab.repro", "lab.bisect"), "lab.repro (scenario) imports lab.bisect (run)"),
        (("lab.guestside.capture", "lab.wait"), "lab.guestside.capture (guest side) imports"),
        (("lab.unplaced", "re"), "lab.unplaced is in no layer"),
    ],
)
def test_the_layer_check_finds_a_wrong_way_import(planted: tuple[str, str], found: str) -> None:
    graph = modules()
    mod, imported = planted
    graph.setdefault(mod, set()).add(imported)
    assert any(v.startswith(found) for v in violations(graph)), violations(graph)


def test_stdlib_only_commands_import_nothing_else() -> None:
    """Statically: what the CLI imports as it starts, what each STDLIB_ONLY command imports
    when it runs, and everything those import in turn."""
    graph, known = modules(), set(files())
    tree = ast.parse(Path(cli.__file__).read_text())
    graph["lab.cli"] = imports(tree.body, known, nested=False)  # commands import lazily
    for name in cli.STDLIB_ONLY:
        (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"cmd_{name}"]
        reached = closure(graph, {"lab.cli", *imports([fn], known)})
        assert "lab.report" in reached or name != "report"  # the check sees the stage
        assert sorted(m for m in reached if third_party(m)) == [], name


def stdlib_only(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -S -m lab ...``: no site-packages, so only the standard library and the lab."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-S", "-m", "lab", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_blocker_blocks(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    for module in ("scapy", "pexpect", "pytest"):
        proc = subprocess.run([sys.executable, "-S", "-c", f"import {module}"], env=env,
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr, module


def test_help_runs_with_the_standard_library_alone(tmp_path: Path) -> None:
    commands = [a for a in cli.parser()._actions if a.dest == "command"]
    names = list(getattr(commands[0], "choices", {}))
    assert "report" in names and "run" in names
    for args in ([], *([n] for n in names)):
        proc = stdlib_only(*args, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "usage: ntalab" in proc.stdout, (args, proc.stderr)


def test_report_runs_with_the_standard_library_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    RunResult([], 1.0, shards=["1/1"], plan="p").save(run)
    proc = stdlib_only("report", str(run), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "verdict: passed" in proc.stdout
    assert RunResult.load(tmp_path / "out") == RunResult([], 1.0, ["1/1"], "p")


def test_scan_runs_with_the_standard_library_alone(tmp_path: Path) -> None:
    """A kernel report in a log is a finding (1), a clean log none (0), a missing log bad
    usage (2): all without scapy, pexpect or pytest."""
    kasan = ROOT / "tests" / "data" / "splats" / "kasan.log"
    proc = stdlib_only("scan", str(kasan), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    title = "KASAN: use-after-free Read in rhashtable_lookup_fast"
    assert f"{kasan}:3-181: [kasan] {title}" in proc.stdout.splitlines()
    clean = tmp_path / "clean.log"
    clean.write_text("[    1.000000] e1000: eth0 NIC Link is Up\n")
    proc = stdlib_only("scan", str(clean), cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"{clean}: no kernel reports\n"), proc.stderr
    proc = stdlib_only("scan", str(clean), str(tmp_path / "missing.log"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing.log: no such log" in proc.stderr
    assert proc.stdout == ""  # checked before any log is read
