#!/usr/bin/env bash
# Run the shared vector store contract suite against the servers of docker-compose.yml.
#   bash scripts/compose-contract.sh [pytest args]      # e.g. -k opensearch -x
# Starts qdrant and opensearch (docker compose, or docker-compose v1), waits until both answer, then runs
# `pytest -m integration tests/stores` with RAG_QDRANT_URL and RAG_OPENSEARCH_URL pointing at them.
# The servers keep running afterwards; `docker compose down` stops them. Needs the dev install (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "compose-contract: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 2
fi
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || { echo "compose-contract: $python not found; run bash scripts/test.sh first" >&2; exit 2; }

"${compose[@]}" up -d qdrant opensearch

export RAG_QDRANT_URL=${RAG_QDRANT_URL:-http://localhost:6333}
export RAG_OPENSEARCH_URL=${RAG_OPENSEARCH_URL:-http://localhost:9200}
# OpenSearch takes up to a minute or two on a cold start; poll both for at most 5 minutes.
"$python" - <<'PY'
import os, sys, time, urllib.request

urls = {"qdrant": os.environ["RAG_QDRANT_URL"] + "/readyz",
        "opensearch": os.environ["RAG_OPENSEARCH_URL"] + "/_cluster/health?wait_for_status=yellow&timeout=5s"}
deadline = time.monotonic() + 300
for name, url in urls.items():
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"compose-contract: {name} did not answer at {url}: {exc}")
            time.sleep(2)
    print(f"compose-contract: {name} is up", file=sys.stderr)
PY

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$python" -m pytest -m integration tests/stores "$@"
