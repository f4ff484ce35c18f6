"""Request and response bodies of the REST API (``<Thing>Request`` / ``<Thing>Response``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Filters = dict[str, Any] | list[str] | str | None
FILTERS_DOC = (
    "Pre-filter, applied inside both searches: a JSON object such as "
    '{"lang": "en", "page": {"gte": 2}, "tags": {"in": ["a", "b"]}, "source": {"glob": "docs/*"}} '
    "(operators eq, ne, in, nin, gt, gte, lt, lte, glob), or the CLI's strings (\"page>=2\")."
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    type: str = Field(description="A stable machine-readable kind, e.g. collection_not_found, invalid_filter.")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class AnswerErrorResponse(ErrorResponse):
    """The LLM failed after retrieval: the error, and the sources the answer would have cited."""

    hits: list[dict[str, Any]]


# -- collections ------------------------------------------------------------------------------------


class CollectionCreateRequest(Strict):
    name: str = Field(description="1-63 lower-case letters, digits, '-' or '_'.", examples=["handbook"])
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of the server settings for this collection, e.g. {"retrieval": {"alpha": 0.3}}.',
    )


class CollectionResponse(BaseModel):
    name: str
    documents: int
    chunks: int
    files: int
    embedding_model: str
    dimension: int | None
    store: str
    chunk_size: int
    chunk_overlap: int
    generation: int
    size_bytes: int
    settings: dict[str, Any]


class CollectionListResponse(BaseModel):
    collections: list[CollectionResponse]


# -- documents --------------------------------------------------------------------------------------


class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=512)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    title: str | None = None
    source: str | None = None


class DocumentsRequest(Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class FailedItem(BaseModel):
    path: str
    reason: str


class SkippedItem(BaseModel):
    """A file left out on purpose (an unsupported type, a link to a file ingested anyway), and why."""

    path: str
    reason: str


class IngestReportResponse(BaseModel):
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    failed: list[FailedItem]
    skipped: list[SkippedItem] = Field(default_factory=list)
    chunks_added: int
    chunks_removed: int
    seconds: float


class JobResponse(BaseModel):
    id: str
    collection: str
    status: Literal["queued", "running", "succeeded", "failed"]
    files_done: int
    files_total: int
    report: IngestReportResponse | None = None
    error: ErrorBody | None = None
    created: str


class DocumentSummary(BaseModel):
    doc_id: str
    source: str
    title: str
    chunks: int
    metadata: dict[str, Any]


class DocumentListResponse(BaseModel):
    total: int
    offset: int
    limit: int
    documents: list[DocumentSummary]


class ChunkOut(BaseModel):
    chunk_id: str
    text: str
    metadata: dict[str, Any]


class DocumentResponse(DocumentSummary):
    chunk_list: list[ChunkOut]


# -- search and ask ---------------------------------------------------------------------------------


class SearchOptions(Strict):
    k: int | None = Field(None, gt=0, le=1000, description="Number of hits [default: retrieval.k].")
    alpha: float | None = Field(None, ge=0, le=1, description="Dense weight: 1 = dense only, 0 = BM25 only.")
    fusion: Literal["linear", "rrf"] | None = None
    filters: Filters = Field(None, description=FILTERS_DOC)
    min_score: float | None = Field(None, description="Post-filter: drop hits whose fused score is below this.")
    max_per_doc: int | None = Field(None, gt=0, description="Post-filter: at most N chunks per document.")
    hyde: bool | None = Field(None, description="HyDE: the dense side searches with an LLM-written passage.")
    rewrite: bool | None = Field(None, description="The LLM rewrites the question into a keyword search query.")
    multi_query: int | None = Field(None, ge=0, le=10, description="Also search N LLM-written query variants.")
    rerank: bool | str | None = Field(
        None,
        description="Rerank the top candidates: true for the configured model (rerank.model), 'llm' for the "
        "configured LLM, false for none [default: rerank.enabled]. Other model names are refused: a client "
        "does not choose what the server loads.",
    )
    explain: bool = Field(False, description="Return `explain`: each stage's output and time.")


class SearchRequest(SearchOptions):
    query: str = Field(min_length=1, max_length=4000)


class HitOut(BaseModel):
    doc_id: str
    chunk_id: str
    score: float
    dense_score: float | None
    bm25_score: float | None
    rerank_score: float | None = Field(None, description="The reranker's score, when the hits were reranked.")
    metadata: dict[str, Any]
    text: str


class NumberedHit(HitOut):
    n: int = Field(description="The context block number the answer's [n] markers refer to.")


class StageRecord(BaseModel):
    """One retrieval stage in ``explain``; the other fields depend on the stage."""

    model_config = ConfigDict(extra="allow")

    stage: str = Field(description="condense, rewrite, multi_query, hyde, search, rerank or post_filter.")
    ms: float


class Explain(BaseModel):
    question: str
    standalone_question: str | None = Field(description="The follow-up rewritten to stand alone, if it was.")
    search_queries: list[str]
    stages: list[StageRecord]
    warnings: list[str]
    total_ms: float


class SearchResponse(BaseModel):
    hits: list[HitOut]
    explain: Explain | None = None


class Turn(Strict):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=20000)


class AskRequest(SearchOptions):
    question: str = Field(min_length=1, max_length=4000)
    history: list[Turn] = Field(
        default_factory=list, max_length=100,
        description="Earlier turns, oldest first: the question is a follow-up, made standalone before retrieval.",
    )
    stream: bool = Field(False, description="Server-Sent Events: sources, delta..., citations, done (or error).")


class CitationOut(BaseModel):
    n: int
    chunk_id: str
    doc_id: str
    source: str
    section: str


class AskResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    hits: list[NumberedHit]
    model: str
    usage: dict[str, int] | None
    warnings: list[str]
    explain: Explain | None = None


# -- OpenAI-compatible chat -------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; ``model`` names the collection. Unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rag-platform"


class ModelListResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    collections: dict[str, str]
    llm: dict[str, Any]
