#!/usr/bin/env bash
# Fresh machine to cited answer: install, ingest the bundled docs/, ask a sample question.
#   bash scripts/quickstart.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
.venv/bin/rag ingest docs
.venv/bin/rag ask "${1:-What happens when I re-run rag ingest on a folder where only one file changed?}"
