#!/usr/bin/env bash
# Refreshes constraints.txt: the exact versions of every Python package the lab
# installs (pyproject.toml's dependencies and dev extras, and theirs), resolved
# anew in a scratch venv, so that every machine running `make deps` runs the
# same lab code. `make constraints` runs it; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q --upgrade pip
"$scratch/venv/bin/pip" install -q '.[dev]'
{
  echo "# Every Python package the lab installs, pinned: tools/ensure-deps.sh installs"
  echo "# with these as constraints. Refresh with 'make constraints' (a fresh resolve"
  echo "# of pyproject.toml's ranges), then run make lint unit test and commit it."
  "$scratch/venv/bin/pip" freeze --all --exclude ntalab
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages pinned"
