"""One typed settings object for the whole platform.

Precedence, lowest to highest: defaults < ``rag.toml`` < ``RAG_*`` environment variables < CLI flags
(passed to :class:`Settings` as keyword arguments). Nested fields use ``__`` in the environment::

    RAG_DATA_DIR=/srv/rag  RAG_STORE__KIND=qdrant  RAG_RETRIEVAL__ALPHA=0.6  RAG_LLM__BASE_URL=http://localhost:11434/v1

The config file is ``./rag.toml`` unless ``RAG_CONFIG`` names another; its tables mirror the nested
models (``[store]``, ``[retrieval]``, ...).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.core.errors import ConfigError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class EmbeddingSettings(BaseModel):
    """Which sentence-transformers model embeds chunks and queries."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="A local folder or a model name; all-MiniLM-L6-v2 resolves to the packaged copy.",
    )
    batch_size: int = Field(64, gt=0)
    device: str = "cpu"
    onnx_queries: bool = Field(True, description="Embed queries with ONNX Runtime on CPU (same weights, ~3x faster).")


class ChunkingSettings(BaseModel):
    """Sliding windows, measured in tokens of the embedding model's tokenizer."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    size: int = Field(200, gt=8, description="Window size in tokens (MiniLM reads at most 256).")
    overlap: int = Field(40, ge=0, description="Tokens shared by consecutive windows.")
    min_tokens: int = Field(
        25,
        ge=0,
        description="Sections under this many tokens (a heading alone, a label, a navigation line) are merged "
        "into the next section when it lies under their heading and on the same page; 0 keeps every section apart.",
    )
    context_prefix: bool = Field(
        False,
        description="Embed and keyword-index each chunk with its document title and heading path in front "
        "(the shown and cited text stays the chunk's own); changing it needs a rebuild.",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap >= self.size:
            raise ValueError(f"chunking.overlap ({self.overlap}) must be smaller than chunking.size ({self.size})")
        return self


class IngestSettings(BaseModel):
    """How ingest commits its work."""

    model_config = ConfigDict(extra="forbid")

    batch_chunks: int = Field(
        256,
        gt=0,
        description="Chunks embedded and committed together (also inside one large file); an interruption "
        "loses at most one batch of embedding work.",
    )
    ray_address: str | None = Field(
        None,
        description="Embed on Ray (rag ingest --ray): local (a private instance), auto (this machine's "
        "cluster), ray://HOST:10001 or HOST:PORT; unset: embed in this process.",
    )
    ray_workers: int | None = Field(
        None, gt=0, description="Ray embedding workers, one CPU each; unset: every CPU of the instance or cluster."
    )
    ocr: Literal["auto", "always", "never"] = Field(
        "auto",
        description="OCR for PDF pages without a text layer and for images: auto (only where no text layer), "
        "always (every PDF page), never (such pages and images are reported, not indexed).",
    )
    max_file_mb: float = Field(256, gt=0, description="Largest file read at all; a larger one is reported and skipped.")
    max_unpacked_mb: float = Field(
        512, gt=0, description="Most a container (Office zip, EPUB, .gz, e-mail) may unpack to (zip bombs)."
    )
    max_pages: int = Field(5000, gt=0, description="Most pages of one PDF (or frames of one TIFF).")
    max_rows: int = Field(200_000, gt=0, description="Most rows of one sheet or CSV file.")
    max_depth: int = Field(3, gt=0, description="How deep attachments and compressed files may nest.")
    parsers: dict[str, str] = Field(
        default_factory=dict,
        description='The parser for a suffix, over the default choice (a plugin included): {".pdf" = "mypdf"}.',
    )


class StoreSettings(BaseModel):
    """The vector store backend and its options."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    kind: str = Field("faiss", description="faiss (embedded default), qdrant, pgvector, opensearch, or a plugin name.")
    index: Literal["flat", "hnsw"] = Field("flat", description="FAISS: exact (flat) or approximate (hnsw).")
    hnsw_m: int = Field(32, gt=1)
    hnsw_ef_search: int = Field(128, gt=0)
    url: str | None = Field(None, description="Server URL (qdrant, pgvector, opensearch); unset: local mode (qdrant on disk, pgvector a private embedded Postgres).")
    api_key: SecretStr | None = None
    collection: str = "rag"
    options: dict[str, Any] = Field(
        default_factory=dict, description="Free-form options handed to a plugin store ([store.options] in rag.toml)."
    )


class RetrievalSettings(BaseModel):
    """Hybrid search defaults; every field can be overridden per query."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    k: int = Field(5, gt=0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of dense vs BM25: 1 = dense only, 0 = BM25 only.")
    fusion: Literal["linear", "rrf"] = "linear"
    confidence_power: float = Field(
        3.0, ge=0, description="Linear fusion adapts alpha per query to each retriever's confidence; 0 = fixed alpha."
    )
    candidates: int = Field(100, gt=0, description="Candidates taken from each retriever before fusion.")
    rrf_k: int = Field(60, gt=0)
    bm25_method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    stemmer: str | None = Field("english", description="PyStemmer language, or empty for none.")
    stopwords: str | None = Field("en", description="bm25s stopword list, or empty for none.")
    keyword: Literal["auto", "local", "store"] = Field(
        "auto",
        description="Keyword side: the store's own text search when it has one (auto), always the local bm25s "
        "index (local), or the store's or an error (store).",
    )
    native_hybrid: Literal["auto", "off"] = Field(
        "off",
        description="auto: with the store's keyword side and linear fusion, an engine that fuses natively "
        "(OpenSearch; Qdrant with its sparse vector) runs the whole hybrid query in one request, at a measured "
        "cost in quality (docs/benchmarks.md#native-fusion); off: fuse here, with confidence weighting.",
    )
    answerable_threshold: float = Field(
        0.3, ge=0.0, le=1.0,
        description="Below this answerability probability, ask answers that the documents do not seem to cover "
        "the question instead of generating (0 = always generate).",
    )
    # Query transforms: each asks the configured LLM ([llm]) and falls back to the plain query if it fails.
    hyde: bool = Field(False, description="HyDE: the dense side searches with a hypothetical answer passage.")
    hyde_weight: float = Field(
        0.5, ge=0.0, le=1.0,
        description="HyDE: weight of the passage's embedding against the query's (1 = passage only).",
    )
    rewrite: bool = Field(False, description="Rewrite the question into a keyword search query before searching.")
    multi_query: int = Field(0, ge=0, le=10, description="Also search N LLM-written variants, merged by RRF.")
    condense: bool = Field(
        True, description="With earlier turns (chat), rewrite a follow-up into a standalone question first."
    )
    stage_timeout: float = Field(30.0, gt=0, description="Seconds a transform's LLM call may take.")
    stage_max_tokens: int = Field(160, gt=0, description="Reply budget of a transform (HyDE passage, rewrites).")
    stage_cache: bool = Field(True, description="Cache transform and LLM-rerank replies in the user cache folder.")


class RerankSettings(BaseModel):
    """Second-stage reranking of the fused candidates (off by default: no cross-encoder ships)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    enabled: bool = Field(False, description="Rerank every search (same as --rerank).")
    model: str | None = Field(
        None,
        description="A sentence-transformers CrossEncoder id or local folder, or 'llm' to rerank with [llm].",
    )
    top_n: int = Field(20, gt=0, description="How many fused candidates are reranked (at least k).")
    batch_size: int = Field(16, gt=0)
    max_length: int = Field(256, gt=8, description="Tokens of query + passage the cross-encoder reads.")
    device: str = "cpu"
    score: Literal["rerank", "blend"] = Field(
        "rerank", description="Final score: the reranker's, or a blend with the fused score."
    )
    blend_weight: float = Field(0.7, ge=0.0, le=1.0, description="Reranker share of a blended score.")
    llm_mode: Literal["pointwise", "listwise"] = Field("pointwise", description="How 'llm' reranking asks.")


class LLMSettings(BaseModel):
    """The OpenAI-compatible chat endpoint; with no ``base_url`` the embedded llama.cpp server is used."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or http://localhost:11434/v1")
    model: str = "SmolLM2-135M-Instruct"
    api_key: SecretStr | None = Field(None, description="Falls back to OPENAI_API_KEY.")
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0)
    temperature: float = Field(0.1, ge=0)
    max_tokens: int = Field(384, gt=0)
    context_tokens: int = Field(1500, gt=0, description="Token budget for the numbered context blocks.")
    structured: bool | None = Field(
        None, description="Ask for JSON-schema output with validated citations; default: on for the embedded server."
    )
    gguf: str | None = Field(None, description="GGUF file for the embedded server; default: packaged SmolLM2.")
    n_ctx: int = Field(4096, gt=0)
    threads: int | None = Field(None, gt=0)
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description='More JSON fields for every chat request, e.g. {"top_k": 40} for llama.cpp or vLLM; '
        "they win over the fields rag-platform sets.",
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2,
        description="OpenAI's frequency_penalty: lowers a token's odds the more often the answer used it; "
        "unset: not sent.",
    )
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="OpenAI's presence_penalty: lowers the odds of any token already used; "
        "unset: not sent.",
    )
    repeat_penalty: float | None = Field(
        None, gt=0,
        description="llama.cpp's repeat_penalty over the last 64 tokens (1: none); not an OpenAI field (OpenAI "
        "rejects it); unset: not sent.",
    )
    repeat_stop_words: int = Field(
        8, ge=0,
        description="Stop an answer as soon as it repeats a run of this many words or a whole sentence, and "
        "cut the repeat (with a warning); 0: never.",
    )

    @field_validator("repeat_stop_words")
    @classmethod
    def _stop_words(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2: single words repeat in any answer")
        return value

    @property
    def chosen(self) -> bool:
        """Whether the user chose an LLM (an endpoint or a GGUF file) rather than leaving the bundled
        SmolLM2-135M, which cannot write answers or standalone questions worth reading."""
        return bool(self.base_url or self.gguf)


class GenerationSettings(BaseModel):
    """How an answer is written from the retrieved hits (``llm`` says which endpoint writes it)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    mode: Literal["auto", "llm", "extractive"] = Field(
        "auto",
        description="extractive: the answer is the passages' own sentences that answer the question, each cited; "
        "llm: the llm endpoint writes it; auto: extractive with the bundled model, llm with any configured endpoint.",
    )
    expand: Literal["none", "neighbours", "section"] = Field(
        "none",
        description="Widen each retrieved chunk before answering: with the chunks next to it, or with its whole "
        "section when that is short; bounded by llm.context_tokens.",
    )


class ApiSettings(BaseModel):
    """``rag serve``: the REST API."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to listen on; a non-loopback host needs API keys.")
    port: int = Field(8000, gt=0, lt=65536)
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API from a browser.")
    max_upload_mb: float = Field(50.0, gt=0, description="Largest request body a document upload may have.")
    job_threshold_kb: float = Field(
        512.0, ge=0, description="Uploads larger than this run as a background job (202 and /v1/jobs/{id})."
    )
    concurrency: int = Field(4, gt=0, description="Searches and answers run at once; more wait their turn.")
    max_json_mb: float = Field(
        4.0, gt=0, description="Largest body any request other than a document upload may have (413 past it)."
    )
    public_details: bool = Field(
        False,
        description="/readyz and /metrics show collections and per-collection counters without an admin key.",
    )


class StateSettings(BaseModel):
    """Where the catalog, collections, API keys and job records live (see docs/vector-stores.md#scale-out)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    backend: Literal["auto", "local", "postgres"] = Field(
        "auto",
        description="local: files in data_dir; postgres: a shared database, so API replicas with their own "
        "data_dir serve the same collections; auto: postgres when state.url is set or the pgvector store has a "
        "store.url, else local.",
    )
    url: str | None = Field(
        None, description="Postgres URL of the shared state; unset: the pgvector store's store.url."
    )


class Settings(BaseSettings):
    """Every knob of rag-platform; see the module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(Path(".rag"), description="Where the index lives.")
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    rerank: RerankSettings = RerankSettings()
    llm: LLMSettings = LLMSettings()
    generation: GenerationSettings = GenerationSettings()
    api: ApiSettings = ApiSettings()
    state: StateSettings = StateSettings()

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = config_path(_CONFIG_FILE.get())
        if config is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)


# The config file named by the caller of load_settings (the CLI's --config), for the settings sources.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("rag_config_file", default=None)


def config_path(explicit: Path | None = None) -> Path | None:
    """The config file in force: ``explicit``, else ``$RAG_CONFIG``, else ``./rag.toml`` if present.

    Raises:
        ConfigError: ``explicit`` or ``$RAG_CONFIG`` names something that is not a file.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (or is not a file)")
        return path
    named = os.environ.get("RAG_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"RAG_CONFIG points at {path}, which is not a file")
        return path
    default = Path("rag.toml")
    return default if default.is_file() else None


def put_dotted(target: dict[str, Any], key: str, value: Any, conflict: str) -> None:
    """Set ``target["a"]["b"] = value`` for ``key = "a.b"``, creating tables on the way.

    Raises:
        ConfigError: with the message ``conflict`` when a table on the way already holds a value.
    """
    *sections, name = key.split(".")
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(conflict)
    target[name] = value


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings with CLI-level overrides on top; nested overrides are dicts.

    Args:
        config: the config file to read instead of ``$RAG_CONFIG`` / ``./rag.toml``.
        overrides: field values that win over every other source.

    Raises:
        ConfigError: naming each invalid field, whichever source it came from.
    """
    token = _CONFIG_FILE.set(Path(config) if config is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed rag.toml
        raise ConfigError(f"cannot read configuration: {exc}") from None
    finally:
        _CONFIG_FILE.reset(token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from file and environment (no CLI overrides)."""
    return load_settings()
