"""``/v1/collections/{name}/search`` and ``/ask`` (JSON or Server-Sent Events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from rag.api.citations import numbered_sources
from rag.api.deps import CallerDep, ServicesDep
from rag.api.errors import ApiError, classify, public_message
from rag.api.responses import errors
from rag.api.schemas import AskRequest, AskResponse, SearchOptions, SearchRequest, SearchResponse
from rag.api.streaming import Cancel, Event, ask_events, run_until_gone, sse
from rag.core.answers import Answer, AnswerError
from rag.core.query import QueryOptions

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"])


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event: its name and its JSON ``data``."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    }


def _fields(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _array_of(schema: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}}


# ``itemSchema`` (OpenAPI 3.2) describes each event; a plain ``schema`` would have to describe the whole
# body, and tools that read streams event by event (schemathesis) take it for the schema of one event.
_SSE_DOC = {
    "content": {
        "text/event-stream": {
            "itemSchema": {"oneOf": [
                _event("sources", _fields(hits=_array_of("NumberedHit"))),
                _event("delta", _fields(text={"type": "string"})),
                _event("citations", _fields(citations=_array_of("CitationOut"))),
                _event("done", {**_fields(model={"type": "string"}, usage={"type": ["object", "null"]},
                                          warnings={"type": "array", "items": {"type": "string"}}),
                                "properties": {
                                    "model": {"type": "string"}, "usage": {"type": ["object", "null"]},
                                    "warnings": {"type": "array", "items": {"type": "string"}},
                                    "answerable": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                                    "evidence": {"oneOf": [{"$ref": "#/components/schemas/EvidenceOut"},
                                                           {"type": "null"}]},
                                    "explain": {"$ref": "#/components/schemas/Explain"},
                                }}),
                _event("error", _fields(type={"type": "string"}, message={"type": "string"},
                                        status={"type": "integer"})),
            ]},
            "example": 'event: sources\ndata: {"hits": [...]}\n\nevent: delta\ndata: {"text": "Refunds"}\n\n'
            'event: citations\ndata: {"citations": [...]}\n\nevent: done\ndata: {"model": "...", "usage": null}\n\n',
        }
    },
    "description": "With stream=true: `sources`, then `delta` events, then `citations` and `done`; "
    "`error` (after the sources) if the LLM fails.",
}


def query_options(body: SearchOptions, engine: Any, **own: Any) -> QueryOptions:
    """The request's query options (``own``: those it shapes itself, such as ``history``).

    A client may not make the server load a model of its choosing.
    """
    if isinstance(body.rerank, str) and body.rerank not in ("llm", engine.settings.rerank.model):
        raise ApiError(
            422, "invalid_request",
            f"rerank: this server reranks with its configured model ({engine.settings.rerank.model or 'none'}) "
            "or 'llm'; send true, false or 'llm'",
        )
    return body.query_options(**own)


@router.post("/search", response_model=SearchResponse, responses=errors(401, 403, 404, 409, 413, 422, 503))
async def search(name: str, body: SearchRequest, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Hybrid search: hits with fused, dense, BM25 (and rerank) scores, metadata and text.

    The optional stages (`hyde`, `rewrite`, `multi_query`, `rerank`) are those of `rag search`;
    `explain: true` adds what each stage produced and how long it took.
    """
    caller.require(name, "read")
    engine = services.workspace.engine(name)
    found = await services.run(partial(engine.retrieve, body.query, options=query_options(body, engine)))
    return {
        "hits": [hit.to_dict() for hit in found.hits],
        **found.answerability(),
        "explain": found.explain if body.explain else None,
    }


def answer_body(answer: Answer, collection: str, explain: bool = False) -> dict[str, Any]:
    """``/ask``'s JSON body for ``answer`` from ``collection`` (each hit with its chunk's ``url``)."""
    return {
        "answer": answer.text,
        "citations": [
            {"n": c.number, "chunk_id": c.hit.chunk.chunk_id, "doc_id": c.hit.chunk.doc_id,
             "source": c.hit.chunk.source, "section": c.hit.chunk.section}
            for c in answer.citations
        ],
        "hits": numbered_sources(answer.used_hits, collection),
        "model": answer.model,
        "usage": answer.usage,
        "warnings": list(answer.warnings),
        "answerable": answer.answerable,
        "evidence": answer.evidence.to_dict() if answer.evidence is not None else None,
        "explain": answer.retrieval.explain if explain and answer.retrieval is not None else None,
    }


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={200: _SSE_DOC, **errors(401, 403, 404, 409, 413, 422, 502, 503, 504)},
)
async def ask(name: str, body: AskRequest, request: Request, services: ServicesDep, caller: CallerDep) -> Any:
    """Retrieve, then answer from the hits with numbered citations ``[n]`` (``n`` is a hit's ``n``).

    A client that hangs up cancels its answer (the LLM stops generating)."""
    caller.require(name, "read")
    engine = services.workspace.engine(name)
    history = [turn.model_dump() for turn in body.history]
    call = partial(engine.ask, body.question, options=query_options(body, engine, history=history))
    if not body.stream:
        cancel = Cancel()
        # AnswerError -> 502/504 with the sources (see api.errors)
        answer = await run_until_gone(
            request, cancel, partial(call, on_sources=cancel.check, on_token=cancel.check), services.limiter
        )
        return answer_body(answer, name, body.explain)
    events = await ask_events(lambda on_sources, on_token: call(on_sources=on_sources, on_token=on_token), services.limiter)
    return StreamingResponse(_ask_stream(events, name, body.explain), media_type="text/event-stream", headers=_NO_BUFFERING)


_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _ask_stream(events: AsyncIterator[Event], collection: str, explain: bool = False) -> AsyncIterator[str]:
    async for event in events:
        if event.kind == "sources":
            yield sse("sources", {"hits": numbered_sources(event.value, collection)})
        elif event.kind == "delta":
            yield sse("delta", {"text": event.value})
        elif event.kind == "answer":
            body = answer_body(event.value, collection, explain)
            yield sse("citations", {"citations": body["citations"]})
            done = {"model": body["model"], "usage": body["usage"], "warnings": body["warnings"],
                    "answerable": body["answerable"], "evidence": body["evidence"]}
            if explain:
                done["explain"] = body["explain"]
            yield sse("done", done)
        elif event.kind == "error":
            exc = event.value
            status, kind = classify(exc)
            payload: dict[str, Any] = {"type": kind, "message": public_message(str(exc)), "status": status}
            if isinstance(exc, AnswerError):
                payload["retryable"] = True
            yield sse("error", payload)
