"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``, where a model is a collection.

Any OpenAI client (the official SDK, LangChain's ``ChatOpenAI``, Open WebUI) can point its base URL at
``http://HOST:PORT/v1`` and get grounded answers. The sources travel in an extra top-level field,
``sources`` (numbered hits, as in ``/ask``), on the non-streamed response and on the last streamed chunk,
so clients that ignore unknown fields keep working and those that read it can show citations. The last
user message is the question; the user and assistant turns before it are the conversation, so a
follow-up is rewritten into a standalone question before retrieval (``retrieval.condense``).

The citations also travel in OpenAI's own shape, which chat clients render: ``annotations`` on the message
(and, streamed, on the delta of one chunk after the text), a ``url_citation`` per ``[n]`` marker whose URL
fetches the cited chunk (:mod:`rag.api.citations`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from rag.api.citations import numbered_sources, url_citations
from rag.api.deps import CallerDep, ServicesDep
from rag.api.errors import ApiError, classify, public_message
from rag.api.responses import errors
from rag.api.schemas import MAX_QUESTION_CHARS, ChatCompletionRequest, ModelListResponse
from rag.api.streaming import Cancel, Event, ask_events, run_until_gone, sse
from rag.core.answers import Answer
from rag.core.query import QueryOptions

router = APIRouter(prefix="/v1", tags=["openai"])

_CHAT_DOC = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "OpenAI's chat.completion object, plus `sources`: the numbered hits the "
                "answer's [n] markers refer to, each with the `url` of its chunk. The message's `annotations` "
                "hold a `url_citation` per [n] marker: its span in `content` and the chunk's absolute URL.",
            }
        },
        # ``itemSchema`` (OpenAPI 3.2): each event, not the whole body (see rag.api.routes.query).
        "text/event-stream": {
            "itemSchema": {
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string", "description": "A chat.completion.chunk as JSON (after the "
                                        "text, one whose delta carries `annotations`; the last one carries `sources`), "
                                        "an `error` object, then `[DONE]`."}},
            },
        },
    },
    "description": "The answer, OpenAI-shaped.",
}


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI's content parts: keep the text ones
        content = " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content.strip() if isinstance(content, str) else ""


def _question(body: ChatCompletionRequest) -> tuple[str, list[dict[str, str]]]:
    """The last user message with text, and the user and assistant turns before it (the history)."""
    for index in range(len(body.messages) - 1, -1, -1):
        message = body.messages[index]
        if message.role == "user" and _text(message.content):
            history = [
                {"role": m.role, "content": _text(m.content)}
                for m in body.messages[:index]
                if m.role in ("user", "assistant") and _text(m.content)
            ]
            question = _text(message.content)
            if len(question) > MAX_QUESTION_CHARS:
                raise ApiError(422, "validation_error",
                               f"messages: the question (the last user message) is limited to {MAX_QUESTION_CHARS} characters")
            return question, history
    raise ApiError(422, "validation_error", "messages: no user message with text to answer")


@router.get("/models", response_model=ModelListResponse, responses=errors(401))
async def list_models(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """The collections this key may read, as OpenAI models."""
    names = [n for n in services.workspace.names() if caller.allows(n, "read")]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "rag-platform"} for n in names]}


@router.post("/chat/completions", responses={200: _CHAT_DOC, **errors(401, 403, 404, 409, 413, 422, 502, 503, 504)})
async def chat_completions(
    body: ChatCompletionRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Answer the last user message from the collection named by ``model``, OpenAI-style; earlier turns
    make it a follow-up. A client that hangs up cancels its answer."""
    caller.require(body.model, "read")
    question, history = _question(body)
    engine = services.workspace.engine(body.model)
    call = partial(engine.ask, question, options=QueryOptions(history=history))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    base_url = str(request.base_url)
    if not body.stream:
        cancel = Cancel()
        answer: Answer = await run_until_gone(
            request, cancel, partial(call, on_sources=cancel.check, on_token=cancel.check), services.limiter
        )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "annotations": url_citations(answer.text, answer.used_hits, body.model, base_url),
                },
                "finish_reason": "length" if any("cut off" in w for w in answer.warnings) else "stop",
            }],
            "usage": answer.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "sources": numbered_sources(answer.used_hits, body.model),
            "system_fingerprint": answer.model,
        }
    events = await ask_events(lambda on_sources, on_token: call(on_sources=on_sources, on_token=on_token), services.limiter)
    return StreamingResponse(
        _chunks(events, completion_id, created, body.model, base_url),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _chunks(
    events: AsyncIterator[Event], completion_id: str, created: int, model: str, base_url: str
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        return sse(None, {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra,
        })

    yield chunk({"role": "assistant", "content": ""})

    content: list[str] = []  # what the client has accumulated: the annotations' offsets point into it
    async for event in events:
        if event.kind == "delta":
            content.append(event.value)
            yield chunk({"content": event.value})
        elif event.kind == "answer":
            answer: Answer = event.value
            # All at once, in one delta after the text, as OpenAI sends them: the SDK's stream accumulator
            # (ChatCompletionStreamState) merges a second list of annotations only by an ``index`` key,
            # which url_citation objects do not have.
            if annotations := url_citations("".join(content), answer.used_hits, model, base_url):
                yield chunk({"annotations": annotations})
            finish = "length" if any("cut off" in w for w in answer.warnings) else "stop"
            yield chunk({}, finish, sources=numbered_sources(answer.used_hits, model), usage=answer.usage)
        elif event.kind == "error":
            status, kind = classify(event.value)
            yield sse(None, {"error": {"type": kind, "message": public_message(str(event.value)), "code": status}})
    yield sse(None, "[DONE]")
