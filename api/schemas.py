"""Request and response bodies of the REST API (``<Thing>Request`` / ``<Thing>Response``)."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator

from rag.core.filters import Filter
from rag.core.query import OPTIONS, QueryOptions, option_help

Filters = dict[str, Any] | list[str] | str | None
FILTERS_DOC = (
    "Pre-filter, applied inside both searches: a JSON object such as "
    '{"lang": "en", "page": {"gte": 2}, "tags": {"in": ["a", "b"]}, "source": {"glob": "docs/*"}} '
    "(operators eq, ne, in, nin, gt, gte, lt, lte, glob), or the CLI's strings (\"page>=2\")."
)


# C0 and C1 controls, bidirectional overrides and isolates, line and paragraph separators: in a name or
# an id they hide what it is (a right-to-left override shows "txt.exe" as "exe.txt") or break lines.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_FILTER_CHARS = 8000
MAX_MESSAGE_CHARS = 20000
MAX_QUESTION_CHARS = 4000


def hidden_characters(value: str) -> str | None:
    """A description of the first control or bidi character in ``value``, or ``None``."""
    match = _HIDDEN.search(value)
    return f"must not contain control or bidirectional characters (U+{ord(match.group()):04X})" if match else None


def _visible(value: str) -> str:
    if (problem := hidden_characters(value)) is not None:
        raise ValueError(problem)
    return value


VisibleId = Annotated[str, AfterValidator(_visible)]


def _finite(value: Any, where: str = "value") -> Any:
    """``value`` if no float in it (nested in lists and objects too) is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: NaN and infinities are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite(item, f"{where}[{index}]")
    return value


FiniteJson = Annotated[Any, AfterValidator(_finite)]


class Strict(BaseModel):
    """A request body: unknown fields, strings for booleans or numbers, NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


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
    settings: dict[str, FiniteJson] = Field(
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
    id: VisibleId = Field(min_length=1, max_length=512)
    text: str
    metadata: dict[str, FiniteJson] = Field(default_factory=dict)
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


class ChunkResponse(BaseModel):
    """One chunk of a document (``?chunk=ID``), where it sits in the document, and its neighbours."""

    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    metadata: dict[str, Any]
    start: int | None = Field(description="Character offset of the chunk's start in the document's text "
                              "(null when the parser gave none).")
    end: int | None = Field(description="Character offset just past the chunk's end in the document's text.")
    page: int | None = Field(description="The 1-based page the chunk starts on, for paged formats.")
    chunk_index: int = Field(description="The chunk's position in its document, from 0.")
    document_chunks: int = Field(description="How many chunks the document has.")
    before: list[ChunkOut] = Field(description="Up to `neighbours` chunks just before it, in document order.")
    after: list[ChunkOut] = Field(description="Up to `neighbours` chunks just after it, in document order.")


# -- search and ask ---------------------------------------------------------------------------------


# The query options of /search and /ask are rag.core.query.QueryOptions' fields, in its order, with its
# types, bounds and help text; what differs on the wire is stated here, once. Adding an option to
# QueryOptions adds it to both requests (and to the OpenAPI document).

# An option's JSON name where it differs from its Python name.
_WIRE_NAMES = {"filter": "filters"}
# Options a request carries in a shape of its own: AskRequest's ``history`` is a list of Turn objects.
_OWN_FIELDS = {"history"}
# JSON types where the Python type is wider: a filter arrives as JSON, never as a parsed Filter.
_WIRE_TYPES: dict[str, Any] = {"filter": Filters}
# What a server bounds beyond the option's own range: it protects itself from huge result sets.
_SERVER_LIMITS: dict[str, dict[str, Any]] = {"k": {"le": 1000}}
# Help text for what a client may send where it differs from a library caller's.
_WIRE_HELP = {
    "filter": FILTERS_DOC,
    "rerank": "Rerank the top candidates: true for the configured model (rerank.model), 'llm' for the "
    "configured LLM, false for none [default: false, from rerank.enabled]. Other model names are refused: a client "
    "does not choose what the server loads.",
}


def _option_fields() -> dict[str, Any]:
    """The request fields of the query options, as :func:`pydantic.create_model` takes them."""
    hints = get_type_hints(QueryOptions)
    derived: dict[str, Any] = {}
    for name, spec in OPTIONS.items():
        if name in _OWN_FIELDS:
            continue
        bounds: dict[str, Any] = {}
        if spec.minimum is not None:
            bounds["gt" if spec.exclusive_minimum else "ge"] = spec.minimum
        if spec.maximum is not None:
            bounds["le"] = spec.maximum
        bounds.update(_SERVER_LIMITS.get(name, {}))
        description = _WIRE_HELP.get(name, option_help(name))
        derived[_WIRE_NAMES.get(name, name)] = (
            _WIRE_TYPES.get(name, hints[name]), Field(None, description=description, **bounds)
        )
    return derived


class _QueryOptionsBody(Strict):
    """The conversion between a request's option fields and :class:`~rag.core.query.QueryOptions`."""

    @field_validator("filters", check_fields=False)
    @classmethod
    def _bounded_filters(cls, value: Filters) -> Filters:
        """A filter is a handful of conditions; its JSON is capped like a question is."""
        if value is not None and len(json.dumps(value, allow_nan=True)) > MAX_FILTER_CHARS:
            raise ValueError(f"filters are limited to {MAX_FILTER_CHARS} characters of JSON")
        return _finite(value, "filters")

    def query_options(self, **own: Any) -> QueryOptions:
        """The request's options as the engine takes them; ``own``: those the request shapes itself (history).

        Raises:
            ConfigError: a value the engine refuses (a malformed filter: :class:`~rag.core.errors.FilterError`).
        """
        wire = {name: getattr(self, _WIRE_NAMES.get(name, name)) for name in OPTIONS if name not in _OWN_FIELDS}
        return QueryOptions(**wire, **own)

    @classmethod
    def option_fields(cls, options: QueryOptions) -> dict[str, Any]:
        """``options`` as this request's JSON fields (those set): the inverse of :meth:`query_options`."""
        return {
            _WIRE_NAMES.get(name, name): value.to_dict() if isinstance(value, Filter) else value
            for name, value in options.given().items() if name not in _OWN_FIELDS
        }


SearchOptions = create_model(
    "SearchOptions",
    __base__=_QueryOptionsBody,
    __doc__="The query options of a search or a question (see :class:`rag.core.query.QueryOptions`).",
    **_option_fields(),
    explain=(StrictBool, Field(False, description="Return `explain`: each stage's output and time.")),
)


class SearchRequest(SearchOptions):
    query: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


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
    url: str | None = Field(None, description="The chunk's URL path (`/v1/collections/{c}/documents/{doc_id}"
                            "?chunk={chunk_id}`): GET it for the chunk with its offsets.")


class StageRecord(BaseModel):
    """One retrieval stage in ``explain``; the other fields depend on the stage."""

    model_config = ConfigDict(extra="allow")

    stage: str = Field(description="condense, rewrite, multi_query, hyde, search, rerank or post_filter.")
    ms: float


class EvidenceOut(BaseModel):
    """The raw retriever scores behind ``answerable`` (docs/search.md#answerability); ``null`` where a
    retriever did not run."""

    dense_top: float | None = Field(description="Best raw cosine similarity of the dense side.")
    dense_gap: float | None = Field(description="dense_top minus the mean cosine of dense ranks 2-10.")
    bm25_top: float | None = Field(description="Best raw keyword (BM25) score.")
    bm25_per_term: float | None = Field(description="bm25_top per analysed query term.")
    bm25_gap: float | None = Field(description="(s1 - s10) / s1 of the keyword scores.")
    term_coverage: float | None = Field(description="Share of the query's terms in the best keyword hit.")
    agreement: float | None = Field(description="Share of the dense top 10 also in the keyword top 10.")
    dense_top_in_bm25: bool | None = Field(description="Whether the dense side's best chunk is in the keyword top 10.")
    query_terms: int | None = Field(description="Analysed query terms.")
    rerank_top: float | None = Field(description="Best reranker score, when reranking ran.")
    keyword: str | None = Field(description="The keyword side (bm25s locally).")


_ANSWERABLE = Field(
    None, ge=0.0, le=1.0,
    description="Calibrated probability that the documents hold an answer (null when it cannot be computed, "
    "e.g. a store's native hybrid query); see docs/search.md#answerability.",
)


class Explain(BaseModel):
    question: str
    standalone_question: str | None = Field(description="The follow-up rewritten to stand alone, if it was.")
    search_queries: list[str]
    stages: list[StageRecord]
    warnings: list[str]
    answerable: float | None = _ANSWERABLE
    evidence: EvidenceOut | None = None
    total_ms: float


class SearchResponse(BaseModel):
    hits: list[HitOut]
    answerable: float | None = _ANSWERABLE
    evidence: EvidenceOut | None = None
    explain: Explain | None = None


class Turn(Strict):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class AskRequest(SearchOptions):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    history: list[Turn] = Field(
        default_factory=list, max_length=100,
        description="Earlier turns, oldest first: the question is a follow-up, made standalone before retrieval.",
    )
    stream: StrictBool = Field(False, description="Server-Sent Events: sources, delta..., citations, done (or error).")


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
    answerable: float | None = _ANSWERABLE
    evidence: EvidenceOut | None = None
    explain: Explain | None = None


# -- OpenAI-compatible chat -------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One message; its text is capped like a turn of ``/ask``'s history (the question more tightly)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    role: str = Field(max_length=64)
    content: str | list[dict[str, FiniteJson]] | None = Field(None, max_length=MAX_MESSAGE_CHARS)

    @field_validator("content")
    @classmethod
    def _bounded_parts(cls, value: Any) -> Any:
        if isinstance(value, list) and sum(len(str(part.get("text", ""))) for part in value) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message's text is limited to {MAX_MESSAGE_CHARS} characters")
        return value


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; ``model`` names the collection. Unknown OpenAI fields are accepted and ignored.

    The messages are capped like ``/ask``: at most 101 (100 turns of history and the question), each at
    most 20,000 characters, the question at most 4,000."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    model: str = Field(max_length=63)
    messages: list[ChatMessage] = Field(min_length=1, max_length=101)
    stream: StrictBool = False
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
    collections: dict[str, str] | None = Field(None, description="Each collection's state (admin keys only).")
    llm: dict[str, Any] | None = Field(None, description="The LLM endpoint's state (admin keys only).")
