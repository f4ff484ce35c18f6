"""``rag mcp`` over stdio, driven by the official MCP client as a desktop agent drives it.

The server is a real ``python -m rag.cli --data-dir ... mcp`` subprocess over the sample corpus (ingested by
a real ``rag ingest``), started from another folder, as Claude Desktop starts it. One session exercises
every tool, the user mistakes that must come back as tool errors without ending the session, and the
shapes of the structured results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult

pytestmark = pytest.mark.slow

TOOLS = {"search", "ask", "list_collections", "list_documents", "get_document", "get_chunk"}


@pytest.fixture(scope="module")
def project(copy_ingested: Callable[[Path], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_ingested(tmp_path_factory.mktemp("mcp-stdio"))


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAG_")}, "HF_HUB_OFFLINE": "1"}


def _data(result: CallToolResult) -> dict[str, Any]:
    """The structured result, checked to be exactly the JSON of the text block clients without
    structured output read."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def _error(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


async def _session(project: Path, cwd: Path) -> dict[str, Any]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "rag.cli", "--data-dir", str(project / ".rag"), "mcp"],
        env=_env(), cwd=str(cwd),
    )
    transport_errors: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # a stdout line that is not protocol lands here
            transport_errors.append(message)

    seen: dict[str, Any] = {}
    with (cwd / "server.err").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), message_handler=on_message,
                          read_timeout_seconds=240) as client:
            seen["tools"] = (await client.list_tools()).tools
            # Mistakes first: each is a tool error, and the session goes on.
            seen["empty"] = await client.call_tool("search", {"query": "   "})
            seen["bad_filter"] = await client.call_tool("search", {"query": "widget", "filters": "page>>2"})
            seen["no_collection"] = await client.call_tool("search", {"query": "widget", "collection": "nope"})
            seen["bad_k"] = await client.call_tool("search", {"query": "widget", "k": 0})
            seen["no_chunk"] = await client.call_tool("get_chunk", {"chunk_id": "no-such-chunk"})
            seen["search"] = await client.call_tool("search", {"query": "How much does the team plan cost?", "k": 3})
            seen["filtered"] = await client.call_tool(
                "search", {"query": "widget", "filters": {"source": {"glob": "docs/guide/*"}}}
            )
            hit = seen["search"].structured_content["hits"][0]
            seen["chunk"] = await client.call_tool("get_chunk", {"chunk_id": hit["chunk_id"], "neighbours": 1})
            seen["document"] = await client.call_tool("get_document", {"doc_id": hit["doc_id"]})
            seen["documents"] = await client.call_tool("list_documents", {"filters": "source~docs/guide/*"})
            seen["collections"] = await client.call_tool("list_collections", {})
            seen["ask"] = await client.call_tool("ask", {"question": "When was the company founded?"})
    seen["transport_errors"] = transport_errors
    return seen


def test_an_agent_uses_every_tool_over_stdio(project: Path, tmp_path: Path) -> None:
    seen = anyio.run(_session, project, tmp_path)
    assert seen["transport_errors"] == []  # nothing but protocol on stdout
    assert "Traceback" not in (tmp_path / "server.err").read_text()

    tools = {tool.name: tool for tool in seen["tools"]}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 60 and "\n " not in tool.description and tool.output_schema, tool.name
        assert tool.annotations.read_only_hint is True
    search_schema = tools["search"].input_schema
    assert search_schema["required"] == ["query"]
    assert {"collection", "k", "filters"} <= set(search_schema["properties"])

    assert _error(seen["empty"]).endswith("invalid_request: query is empty; give the words or question to look for")
    assert "invalid_filter" in _error(seen["bad_filter"])
    assert "collection_not_found: no collection named 'nope'" in _error(seen["no_collection"])
    assert "k" in _error(seen["bad_k"]) and "greater than or equal to 1" in _error(seen["bad_k"])
    assert "chunk_not_found" in _error(seen["no_chunk"])

    search = _data(seen["search"])
    assert search["collection"] == "default" and len(search["hits"]) == 3
    top = search["hits"][0]
    assert top["metadata"]["source"] == "docs/web/pricing.html" and "45 euros" in top["text"]
    assert 0.0 <= search["answerable"] <= 1.0
    assert all(h["metadata"]["source"].startswith("docs/guide/") for h in _data(seen["filtered"])["hits"])

    chunk = _data(seen["chunk"])
    assert (chunk["chunk_id"], chunk["doc_id"], chunk["text"]) == (top["chunk_id"], top["doc_id"], top["text"])
    # The plans chunk opens its two-chunk page: no chunk before it, the refunds chunk after it.
    assert (chunk["chunk_index"], chunk["document_chunks"], chunk["before"]) == (0, 2, [])
    assert [c["metadata"]["section"] for c in chunk["after"]] == ["Pricing > Refunds"]
    assert chunk["start"] == 0 and chunk["end"] == len(chunk["text"])

    document = _data(seen["document"])
    assert document["doc_id"] == top["doc_id"] and document["chunks"] == len(document["chunk_list"])
    assert top["chunk_id"] in [c["chunk_id"] for c in document["chunk_list"]]
    documents = _data(seen["documents"])
    assert sorted(d["doc_id"] for d in documents["documents"]) == ["docs/guide/install.md", "docs/guide/troubleshoot.md"]
    collections = _data(seen["collections"])
    assert [c["name"] for c in collections["collections"]] == ["default"] and collections["default"] == "default"
    assert collections["collections"][0]["documents"] == 4

    ask = _data(seen["ask"])
    assert "1987" in ask["answer"] and ask["citations"]
    cited = {c["n"] for c in ask["citations"]}
    assert {p["n"] for p in ask["passages"]} == cited
    assert any("1987" in p["text"] for p in ask["passages"])
    assert ask["answerable"] > 0.5 and ask["warnings"] == [] and ask["model"] == "extractive"


def test_an_unknown_collection_fails_before_any_protocol(project: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--data-dir", str(project / ".rag"), "mcp", "--collection", "nope"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "no collection named 'nope'" in result.stderr and "Traceback" not in result.stderr
