"""The README and docs/ stay true of the tree: its layout, its stages, its links, the
scenarios, and the example the scenario guide walks through."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The README is read in five minutes; long material goes to docs/.
README_LINES = 160


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def tracked_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    return {f.split("/")[0] for f in files} - {"README.md", ".gitignore"}


def test_the_layout_section_matches_the_tree() -> None:
    layout = section(README.read_text(), "Layout")
    listed = {m.group(1).rstrip("/") for m in re.finditer(r"^    (\S+)", layout, re.M)}
    assert {p for p in listed if not (ROOT / p).exists()} == set()
    assert tracked_top_level() - {p.split("/")[0] for p in listed} == set()
    for sub in ("lab/guestside", "tests/lab", "tests/data", "docs/ci", "kmod/ntadump"):
        assert (ROOT / sub).is_dir(), sub


def test_the_stage_table_names_every_module_of_lab() -> None:
    stages = section(README.read_text(), "How it works")
    table = "\n".join(line for line in stages.splitlines() if line.startswith("|"))
    named = set(re.findall(r"`([a-z_/]+\.py)`", table))
    modules = {p.name for p in (ROOT / "lab").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert {n for n in named if not (ROOT / "lab" / n).is_file()} == set()
    assert modules - named == set()


def test_every_link_of_the_docs_resolves() -> None:
    for doc in [README, *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= README_LINES


def test_the_guide_walks_through_the_real_example() -> None:
    guide = (ROOT / "docs" / "writing-scenarios.md").read_text()
    example = guide.split("```python\n", 1)[1].split("```", 1)[0]
    assert example == (ROOT / "tests" / "lab" / "test_smoke.py").read_text()
    assert len([line for line in example.splitlines() if line.strip()]) <= 20


def test_every_scenario_is_in_the_scenario_table() -> None:
    table = (ROOT / "docs" / "scenarios.md").read_text()
    names = {
        m.group(1)
        for f in (ROOT / "tests" / "lab").glob("test_*.py")
        for m in re.finditer(r"^def test_(\w+)", f.read_text(), re.M)
    }
    assert {n for n in names if f"`{n}`" not in table} == set()
