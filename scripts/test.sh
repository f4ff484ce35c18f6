#!/usr/bin/env bash
# Install the project with its dev dependencies into ./.venv, lint it, and run the test suite.
#   bash scripts/test.sh [pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
EXTRAS=dev bash scripts/install.sh || exit 1

# Lint: seconds, so a finding fails the run before the long suite starts. The rules are [tool.ruff] in
# pyproject.toml; `.venv/bin/ruff check --fix` repairs the safe findings.
echo "lint: ruff check" >&2
if ! .venv/bin/ruff check .; then
    echo "lint failed: ruff check found the problems above" >&2
    exit 1
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": a suite that tests nothing must not pass silently.
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
