"""The CI job matrices in docs/ci/: six shards of one plan, each keeping its results, and a
report over all six; every ntalab command in them is one the CLI takes."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cli, plan

CI = Path(__file__).resolve().parents[1] / "docs" / "ci"
SHARDS = 6
# What the CI systems put in the variables the commands use.
VARIABLES = {
    "${{ matrix.shard }}": "3",
    "$CI_NODE_INDEX": "3",
    "$CI_NODE_TOTAL": str(SHARDS),
    "$KERNELS": "-k debian-6.1 -k debian-6.1-kasan",
    "$timings": "--timings results/previous",
}


def load(text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def lab_commands(script: str) -> list[list[str]]:
    """Each ``python -m lab ...`` command of a script, variables filled in, as argv."""
    for var, value in VARIABLES.items():
        script = script.replace(var, value)
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line.split(">")[0])
        if "lab" in words and words[words.index("lab") - 1] == "-m":
            out.append(words[words.index("lab") + 1 :])
    return out


def check_parses(argv: list[str]) -> None:
    args = cli.parser().parse_args(argv)  # argparse exits 2 on anything it does not take
    if getattr(args, "shard", None):
        assert plan.Shard.parse(args.shard).count == SHARDS


def steps(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in job.get("steps", []))


def check_github(text: str) -> None:
    jobs = load(text)["jobs"]
    shard = jobs["shard"]
    assert shard["strategy"]["matrix"]["shard"] == list(range(1, SHARDS + 1))
    assert shard["needs"] == "plan" and jobs["plan"]["needs"] == "kernels"
    (run,) = lab_commands(steps(shard))
    assert run[:4] == ["run", "--plan", "plan.json", "--shard"] and run[4] == "3/6"
    out = run[run.index("--out") + 1]
    uploads = [s for s in shard["steps"] if str(s.get("uses", "")).startswith("actions/upload")]
    assert [(s["if"], s["with"]["path"]) for s in uploads] == [
        ("always()", out.replace("3", "${{ matrix.shard }}"))
    ]
    planned = lab_commands(steps(jobs["plan"]))
    assert planned[0][-4:-2] == ["--list", "--json"] or "--json" in planned[0]
    report = jobs["report"]
    assert report["needs"] == "shard" and report["if"] == "always()"
    (merge,) = lab_commands(steps(report))
    assert merge[0] == "report"
    assert merge[1 : 1 + SHARDS] == [f"results/results-shard-{i}" for i in range(1, SHARDS + 1)]
    for argv in [*planned, run, merge]:
        check_parses(argv)


def check_gitlab(text: str) -> None:
    ci = load(text)
    shard = ci["shard"]
    assert shard["parallel"] == SHARDS and shard["needs"] == ["plan"]
    (run,) = lab_commands("\n".join(shard["script"]))
    assert run[:5] == ["run", "--plan", "plan.json", "--shard", f"3/{SHARDS}"]
    assert shard["artifacts"] == {"when": "always", "paths": ["results/shard-$CI_NODE_INDEX/"]}
    assert run[run.index("--out") + 1] == "results/shard-3"
    assert shard["retry"]["exit_codes"] == [3]  # the lab could not run: a finding is not retried
    planned = lab_commands("\n".join(ci["plan"]["script"]))
    assert "--json" in planned[0] and ci["plan"]["artifacts"]["paths"] == ["plan.json"]
    report = ci["report"]
    assert report["needs"] == ["shard"] and report["when"] == "always"
    (merge,) = lab_commands("\n".join(report["script"]))
    assert merge[0] == "report"
    assert merge[1 : 1 + SHARDS] == [f"results/shard-{i}" for i in range(1, SHARDS + 1)]
    assert ci["stages"] == ["kernels", "plan", "shards", "report"]
    for argv in [*planned, run, merge]:
        check_parses(argv)


CHECKS = {"github-actions.yml": check_github, "gitlab-ci.yml": check_gitlab}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_ci_file_runs_six_shards_of_one_plan_and_merges_them(name: str) -> None:
    CHECKS[name]((CI / name).read_text())


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("github-actions.yml", "results/results-shard-6 --out", "--out"),  # a shard not merged
        ("github-actions.yml", "shard: [1, 2, 3, 4, 5, 6]", "shard: [1, 2, 3, 4, 5]"),
        ("github-actions.yml", "--shard ${{ matrix.shard }}/6", "--shard ${{ matrix.shard }}/5"),
        ("gitlab-ci.yml", "results/shard-6 --out", "--out"),
        ("gitlab-ci.yml", "parallel: 6", "parallel: 5"),
        (
            "gitlab-ci.yml",
            "    when: always\n    paths: [results/shard",
            "    paths: [results/shard",
        ),
        ("gitlab-ci.yml", "--plan plan.json", "--plan-file plan.json"),  # not an ntalab flag
    ],
)
def test_the_ci_check_fails_on_a_broken_file(name: str, good: str, bad: str) -> None:
    text = (CI / name).read_text()
    assert good in text
    with pytest.raises((AssertionError, SystemExit)):
        CHECKS[name](text.replace(good, bad))
