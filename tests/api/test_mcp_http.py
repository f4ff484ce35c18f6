"""The MCP server at ``/mcp`` of a real ``rag serve`` process, with API keys, through the official MCP client.

Collections ``alpha`` and ``bravo`` each hold a document; ``bravo``'s carries a marker. A read key scoped
to ``alpha`` must see only ``alpha`` through every tool, get a clear tool error for ``bravo``, and the
marker must never reach it; no key, or an unknown one, is a 401 before any MCP is spoken; a web page from
another origin is refused. The tools' results are the REST API's own JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from api_server import ApiServer
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from rag.api.keys import KeyStore

pytestmark = pytest.mark.slow

MARKER = "WOMBAT-5512-CLASSIFIED"
QUESTION = "When does the alpha team meet?"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass(frozen=True)
class Keys:
    read_alpha: str
    admin: str


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    server = start_server(tmp_path_factory.mktemp("mcp-http") / "data")
    with server.client() as client:  # filled while the server is open; keys from then on
        for name, text in (("alpha", "The alpha team meets on Mondays to plan the garden."),
                           ("bravo", f"{MARKER}: the bravo team meets on Mondays to plan the garden.")):
            client.post("/v1/collections", json={"name": name}).raise_for_status()
            documents = [{"id": f"{name}/notes", "text": text, "metadata": {"team": name}}]
            client.post(f"/v1/collections/{name}/documents", json={"documents": documents}).raise_for_status()
    return server


@pytest.fixture(scope="module")
def keys(server: ApiServer) -> Keys:
    store = KeyStore(server.data_dir)
    return Keys(read_alpha=store.create("alpha", "read", "reader")[0], admin=store.create("*", "admin", "root")[0])


def _data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def _error(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


async def _calls(url: str, key: str, calls: list[tuple[str, dict[str, Any]]]) -> list[CallToolResult]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=240)
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} >= {"search", "ask", "get_chunk"}
        return [await client.call_tool(name, arguments) for name, arguments in calls]


def test_a_read_key_reaches_only_its_collection_through_every_tool(server: ApiServer, keys: Keys) -> None:
    with server.client(keys.admin) as admin:
        bravo = admin.post("/v1/collections/bravo/search", json={"query": "garden"}).json()["hits"][0]
        rest = admin.post("/v1/collections/alpha/search", json={"query": QUESTION, "k": 1}).json()
    results = anyio.run(_calls, server.url, keys.read_alpha, [
        ("list_collections", {}),
        ("search", {"query": QUESTION, "k": 1}),  # no collection: the key's own
        ("ask", {"question": QUESTION, "collection": "alpha"}),
        ("search", {"query": "garden", "collection": "bravo"}),
        ("search", {"query": "garden", "collection": "default"}),
        ("ask", {"question": "garden", "collection": "bravo"}),
        ("get_chunk", {"chunk_id": bravo["chunk_id"], "collection": "bravo"}),
        ("get_chunk", {"chunk_id": bravo["chunk_id"]}),  # bravo's id asked of alpha
        ("get_document", {"doc_id": "bravo/notes", "collection": "bravo"}),
        ("list_documents", {"collection": "bravo"}),
        ("search", {"query": "garden", "filters": {"team": "bravo"}}),
    ])
    assert MARKER not in "".join(r.model_dump_json() for r in results)
    listed, search, ask, *refused, unknown_chunk, _, _, filtered = results

    collections = _data(listed)
    assert [c["name"] for c in collections["collections"]] == ["alpha"] and collections["default"] == "alpha"
    # The tool's hits are the REST API's hits, field for field.
    assert _data(search)["hits"] == rest["hits"] and _data(search)["collection"] == "alpha"
    assert _data(search)["answerable"] == rest["answerable"]
    answer = _data(ask)
    assert "Mondays" in answer["answer"] and [p["doc_id"] for p in answer["passages"]] == ["alpha/notes"]

    assert _error(refused[0]).endswith("forbidden: this key may not read collection 'bravo'")
    assert _error(refused[1]).endswith("forbidden: this key may not read collection 'default'")
    assert all("forbidden" in _error(r) for r in (*refused, results[8], results[9]))
    assert "chunk_not_found" in _error(unknown_chunk)
    assert _data(filtered)["hits"] == []


def test_an_admin_key_sees_every_collection(server: ApiServer, keys: Keys) -> None:
    (listed,) = anyio.run(_calls, server.url, keys.admin, [("list_collections", {})])
    assert [c["name"] for c in _data(listed)["collections"]] == ["default", "alpha", "bravo"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer rag_0000_unknown"}])
def test_no_key_or_an_unknown_key_is_401(server: ApiServer, keys: Keys, headers: dict[str, str]) -> None:
    response = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers}, timeout=30)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "unauthorized"


def test_pages_from_other_origins_are_refused(server: ApiServer, keys: Keys) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {keys.read_alpha}"}
    refused = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**headers, "Origin": "http://evil.example"})
    assert refused.status_code == 403 and "api.cors_origins" in refused.json()["error"]["message"]
    local = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**headers, "Origin": "http://localhost:6274"})
    assert local.status_code == 200 and local.json()["result"]["serverInfo"]["name"] == "rag-platform"
