"""OpenSearchStore: query and filter **translation tests** (unit tests, no server), then the shared contract
and congruence against a real server when ``RAG_OPENSEARCH_URL`` is set.

No OpenSearch server can run on this machine, so the unit tests here check *translation*, not search:

* the exact request bodies the store sends (index mapping, bulk actions, exact and ``knn`` searches with
  the filter inside, keyword search, the ``hybrid`` query and its search pipeline), through the real
  opensearch-py client and ``helpers.bulk`` talking to :class:`RecordingConnection`, a fake that only
  records requests and returns canned responses;
* the filter semantics, by evaluating the generated query DSL with :func:`dsl_matches` (a reference
  reading of the few OpenSearch queries used: ``term``, ``terms``, ``range``, ``regexp``, ``exists``,
  ``bool``) over the documents the store would index, against :meth:`Filter.matches` on the shared corpus,
  on edge cases, and on thousands of random globs.

What they cannot show (that the server ranks and scores as documented) is what the ``integration`` tests
at the end check: the full :class:`VectorStoreContract` suite, congruence with exact FAISS, the HNSW
path, keyword and hybrid search, all against ``RAG_OPENSEARCH_URL`` (see docs/deployment-compose.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection

from rag.core.errors import ConfigError, FilterError, IndexMismatchError, StoreError
from rag.core.filters import Filter, parse_filter
from rag.core.settings import StoreSettings
from rag.stores.base import StoredChunk, VectorStore
from rag.stores.faiss_store import FaissStore
from rag.stores.opensearch import (
    KEYWORD_IGNORE_ABOVE,
    OpenSearchKeywordIndex,
    OpenSearchStore,
    cosine_from_score,
    create_opensearch_store,
    document_id,
    field_name,
    filter_query,
    glob_to_lucene_regexp,
    index_body,
    redact,
    score_from_cosine,
)
from rag.testing.stores import SCORE_TOLERANCE, KeywordHybridContract, VectorStoreContract, assert_same_hits

# -- the recording fake ------------------------------------------------------------------------------


class Request(NamedTuple):
    method: str
    path: str
    params: dict[str, Any]
    body: Any  # parsed JSON, a list of parsed NDJSON lines for _bulk, or None


class FakeCluster:
    """Stands in for an OpenSearch server, which cannot run here: it records every request and answers
    with canned responses. It keeps no data and runs no query; answers are queued per path with
    :meth:`reply`, else a fixed default (index absent, empty hits, bulk items all successful).

    Attributes:
        requests: everything the client sent, in order.
        mapping: what ``GET /<index>/_mapping`` answers (``None``: the body of the last index creation).
        exists: what ``HEAD /<index>`` answers.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.mapping: dict[str, Any] | None = None
        self.exists = False
        self.count = 0
        self.bulk_status: dict[str, int] = {}  # _id -> status of its bulk item (default 201 / 200)
        self._queued: dict[tuple[str, str], list[tuple[int, Any]]] = {}

    def reply(self, path: str, payload: Any, status: int = 200, method: str = "*") -> None:
        """Queue one answer to the next request on ``path`` (any method unless given)."""
        self._queued.setdefault((method, path), []).append((status, payload))

    def sent(self, path: str | None = None, method: str | None = None) -> list[Request]:
        """Recorded requests, optionally only those to ``path`` / with ``method``."""
        return [r for r in self.requests if (path is None or r.path == path) and (method is None or r.method == method)]

    def handle(self, method: str, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        self.requests.append(Request(method, path, params, body))
        for key in ((method, path), ("*", path)):
            if self._queued.get(key):
                return self._queued[key].pop(0)
        parts = path.strip("/").split("/")
        if method == "HEAD":
            return (200 if self.exists else 404), None
        if parts[-1] == "_bulk":
            items = []
            for line in body[::1]:
                op = next(iter(line)) if len(line) == 1 and next(iter(line)) in ("index", "delete") else None
                if op:
                    doc = line[op]["_id"]
                    default = 201 if op == "index" else 200
                    items.append({op: {"_id": doc, "status": self.bulk_status.get(doc, default)}})
            return 200, {"errors": any(next(iter(i.values()))["status"] >= 300 for i in items), "items": items}
        if parts[-1] == "_mapping":
            created = [r.body for r in self.requests if r.method == "PUT" and len(r.path.strip("/").split("/")) == 1]
            mapping = self.mapping if self.mapping is not None else created[-1]["mappings"]
            return 200, {parts[0]: {"mappings": mapping}}
        if parts[-1] == "_count":
            return 200, {"count": self.count}
        if parts[-1] == "_search":
            return 200, {"hits": {"hits": []}}
        if parts[-1] == "_mget":
            return 200, {"docs": []}
        return 200, {"acknowledged": True}


class RecordingConnection(Connection):
    """An opensearch-py connection that sends nothing: it hands each request to a :class:`FakeCluster`
    and returns its canned answer, raising the client's own exceptions for error statuses."""

    def __init__(self, cluster: FakeCluster, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster

    def perform_request(
        self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None
    ):
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if text and url.endswith("/_bulk"):
            parsed: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            parsed = json.loads(text) if text else None
        params = {k: v.decode() if isinstance(v, bytes) else v for k, v in (params or {}).items()}
        status, payload = self.cluster.handle(method, url, params, parsed)
        raw = json.dumps(payload) if payload is not None else ""
        if not (200 <= status < 300) and status not in ignore:
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json"}, raw

    def close(self) -> None:
        """Nothing to release."""


def recording_client(cluster: FakeCluster) -> OpenSearch:
    return OpenSearch(hosts=["http://opensearch.invalid:9200"], connection_class=RecordingConnection, cluster=cluster)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def open_store(cluster: FakeCluster, dimension: int = 4, **kwargs: Any) -> OpenSearchStore:
    collection = kwargs.pop("collection", "docs")
    return OpenSearchStore(dimension, collection=collection, client=recording_client(cluster), **kwargs)


def hit(chunk_id: str, score: float) -> dict[str, Any]:
    return {"_id": chunk_id, "_score": score, "_source": {"chunk_id": chunk_id}, "sort": [score, chunk_id]}


def hits(*pairs: tuple[str, float]) -> dict[str, Any]:
    return {"hits": {"hits": [hit(cid, score) for cid, score in pairs]}}


# -- a reference reading of the query DSL the store emits ---------------------------------------------


def lucene_regexp_to_python(expression: str) -> str:
    """Lucene ``regexp`` syntax (flags NONE) as a Python pattern: ``\\c`` a literal, ``.`` any character,
    ``*`` repetition, ``[...]`` / ``[^...]`` classes with ranges and escapes. Anything else is a literal
    only when it is an ASCII letter or digit (the store escapes the rest, so this rejects what it should)."""
    out, i = [], 0
    while i < len(expression):
        c = expression[i]
        if c == "\\":
            out.append(re.escape(expression[i + 1]))
            i += 2
        elif c in ".*":
            out.append(c)
            i += 1
        elif c == "[":
            j, members = i + 1, []
            negate = expression[j] == "^"
            j += negate
            while expression[j] != "]":
                if expression[j] == "\\":
                    members.append(re.escape(expression[j + 1]))
                    j += 2
                elif expression[j] == "-":
                    members.append("-")
                    j += 1
                else:
                    assert expression[j].isascii() and expression[j].isalnum(), expression
                    members.append(expression[j])
                    j += 1
            out.append(f"[{'^' if negate else ''}{''.join(members)}]")
            i = j + 1
        else:
            assert c.isascii() and c.isalnum(), f"unescaped {c!r} in {expression!r}"
            out.append(c)
            i += 1
    return "".join(out)


def _field_values(source: dict[str, Any], path: str) -> list[Any]:
    node: Any = source
    for part in path.split(".", 2):  # filterable.<kind>.<encoded key>: the key holds no dot
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return []
    return node if isinstance(node, list) else [node]


def _indexed(path: str, values: list[Any]) -> list[Any]:
    """What the mapping indexes: keywords up to ``ignore_above``, numbers as doubles."""
    if ".keyword." in path:
        return [v for v in values if len(v) <= KEYWORD_IGNORE_ABOVE]
    if ".number." in path:
        return [float(v) for v in values]
    return values


def _same(indexed: Any, wanted: Any, path: str) -> bool:
    if ".number." in path:
        return not isinstance(wanted, bool) and isinstance(wanted, (int, float)) and indexed == float(wanted)
    if ".boolean." in path:
        return wanted is indexed
    return type(indexed) is type(wanted) and indexed == wanted


def dsl_matches(query: dict[str, Any], source: dict[str, Any]) -> bool:
    """Whether OpenSearch's ``query`` (the subset the store emits) matches the document ``source``."""
    (kind, spec), = query.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        must = all(dsl_matches(q, source) for q in spec.get("filter", []) + spec.get("must", []))
        must_not = any(dsl_matches(q, source) for q in spec.get("must_not", []))
        should = spec.get("should", [])
        at_least = spec.get("minimum_should_match", 0 if "filter" in spec or "must" in spec else 1)
        return must and not must_not and sum(dsl_matches(q, source) for q in should) >= (at_least if should else 0)
    if kind == "exists":
        return bool(_field_values(source, spec["field"]))
    (path, value), = spec.items()
    indexed = _indexed(path, _field_values(source, path))
    if kind == "term":
        return any(_same(v, value, path) for v in indexed)
    if kind == "terms":
        return any(_same(v, w, path) for v in indexed for w in value)
    if kind == "range":
        ops = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}
        return any(all(ops[op](float(v), float(bound)) for op, bound in value.items()) for v in indexed)
    if kind == "regexp":
        assert value["flags"] == "NONE"
        pattern = re.compile(lucene_regexp_to_python(value["value"]), re.DOTALL)
        return any(pattern.fullmatch(v) for v in indexed)
    raise AssertionError(f"unexpected query {kind}")


def indexed_source(metadata: dict[str, Any]) -> dict[str, Any]:
    """The document the store sends for this metadata (built by the store's own code)."""
    return OpenSearchStore._source(StoredChunk("x", np.ones(4, dtype=np.float32), "", metadata), np.ones(4))


def assert_translation_agrees(flt: Filter, metadata: dict[str, Any]) -> None:
    try:
        query = filter_query(flt)
    except Exception as exc:  # noqa: BLE001 - MatchesNothing, checked by name below (any other type fails the assert)
        assert type(exc).__name__ == "MatchesNothing" and not flt.matches(metadata), (flt, metadata)  # noqa: PT017 - a translation that refuses is checked against the oracle, not expected
        return
    assert dsl_matches(query, indexed_source(metadata)) == flt.matches(metadata), (flt, metadata, query)


# -- translation tests: filters ------------------------------------------------------------------------


def test_translation_agrees_with_filter_matches_on_the_shared_corpus(corpus, metadata_filter: Filter) -> None:
    for metadata in corpus.metadata:
        assert_translation_agrees(metadata_filter, metadata)


EDGE_METADATA: list[dict[str, Any]] = [
    {},
    {"tags": []},
    {"tags": [None]},
    {"tags": ["a", 2, True, None, ["nested"], {"k": "v"}]},
    {"lang": None},
    {"lang": {"nested": "object"}},
    {"page": 3.0},
    {"page": True},
    {"page": "3"},
    {"flag": 1},
    {"flag": False},
    {"a.b": "x", "a": "y"},
    {"_private": "p", "%41": "pct", "A": "upper"},
    {"modified": ["2024-01-01", "not a date", "2024-02-30"]},
    {"modified": "2024-03-15 10:00:00+05:30"},
    {"source": "docs/[x]*?.md"},
    {"source": "ünï/çødé\n.md"},
    {"score": -0.0, "year": 10**15},
]
EDGE_FILTERS: list[dict[str, Any]] = [
    {"tags": {"ne": "a"}},
    {"tags": {"nin": ["zzz"]}},
    {"tags": {"in": ["a", 2, True]}},
    {"tags": 2.0},
    {"tags": True},
    {"lang": {"ne": "en"}},
    {"page": 3},
    {"page": True},
    {"page": "3"},
    {"page": {"gte": 3}},
    {"page": {"lt": float("inf")}},
    {"page": {"gt": float("-inf")}},
    {"page": {"gt": float("inf")}},
    {"page": {"lt": float("nan")}},
    {"page": {"ne": float("nan")}},
    {"page": {"in": [float("nan"), 3]}},
    {"flag": 1},
    {"flag": False},
    {"flag": {"ne": True}},
    {"a.b": "x"},
    {"a": "y"},
    {"_private": "p"},
    {"%41": "pct"},
    {"A": "upper"},
    {"modified": {"gte": "2024-01-01T00:00:00Z"}},
    {"modified": {"lt": "2024-03-15T05:00:00Z"}},
    {"modified": {"lte": "2024-03-15T04:30:00Z"}},
    {"source": {"glob": "docs/[[]x]*"}},
    {"source": {"glob": "docs/*[?].md"}},
    {"source": {"glob": "*/çødé?.md"}},
    {"source": {"glob": "docs/[z-a]*"}},
    {"score": 0},
    {"year": {"gte": 10**15}},
]


@pytest.mark.parametrize("spec", EDGE_FILTERS, ids=str)
def test_translation_edge_cases_agree_with_filter_matches(spec: dict[str, Any]) -> None:
    """Empty and mixed lists, nulls, objects, 3 == 3.0, True != 1, dotted and odd keys, dates, globs."""
    flt = parse_filter(spec)
    for metadata in EDGE_METADATA:
        assert_translation_agrees(flt, metadata)


def test_translation_of_random_globs_agrees_with_fnmatchcase() -> None:
    rng = random.Random(7)
    alphabet = "ab-!^]\\[*?.$(|{+&~#@<>\"é/"
    values = ["".join(rng.choice("ab-!^]\\[.$(|{+&~#@<>\"é/") for _ in range(rng.randint(0, 6))) for _ in range(300)]
    for _ in range(3000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        regexp = glob_to_lucene_regexp(pattern)
        compiled = re.compile(lucene_regexp_to_python(regexp), re.DOTALL) if regexp is not None else None
        for value in values:
            expected = fnmatch.fnmatchcase(value, pattern)
            got = compiled is not None and compiled.fullmatch(value) is not None
            assert got == expected, (pattern, regexp, value)


def test_translation_of_each_operator_to_query_dsl() -> None:
    """The exact clauses, one per operator: typed fields, ``present`` for negations, micros for dates."""
    query = filter_query(parse_filter({
        "lang": "en", "page": {"gte": 2, "lt": 7.5}, "tags": {"in": ["a", "b", 3, True]}, "status": {"ne": "draft"},
        "kind": {"nin": ["x", 1]}, "modified": {"gt": "2024-01-01T01:00:00+01:00"}, "source": {"glob": "docs/*.md"},
        "flag": True, "a.b": 1,
    }))
    assert query == {"bool": {"filter": [
        {"term": {"filterable.keyword.lang": "en"}},
        {"range": {"filterable.number.page": {"gte": 2}}},
        {"range": {"filterable.number.page": {"lt": 7.5}}},
        {"bool": {"should": [
            {"terms": {"filterable.keyword.tags": ["a", "b"]}},
            {"term": {"filterable.number.tags": 3}},
            {"term": {"filterable.boolean.tags": True}},
        ], "minimum_should_match": 1}},
        {"bool": {"filter": [{"term": {"filterable.present": "status"}}],
                  "must_not": [{"term": {"filterable.keyword.status": "draft"}}]}},
        {"bool": {"filter": [{"term": {"filterable.present": "kind"}}],
                  "must_not": [{"term": {"filterable.keyword.kind": "x"}}, {"term": {"filterable.number.kind": 1}}]}},
        {"range": {"filterable.date.modified": {"gt": 1_704_067_200_000_000}}},
        {"regexp": {"filterable.keyword.source": {"value": "docs\\/.*\\.md", "flags": "NONE"}}},
        {"term": {"filterable.boolean.flag": True}},
        {"term": {"filterable.number.a%2Eb": 1}},
    ]}}
    assert filter_query(None) == filter_query(Filter()) == {"match_all": {}}


def test_translation_of_uncomparable_values_is_refused() -> None:
    from rag.core.filters import Condition

    with pytest.raises(FilterError, match="cannot compare"):
        filter_query(Filter((Condition("x", "in", [object()]),)))


def test_translation_of_metadata_into_typed_fields() -> None:
    source = indexed_source({
        "tags": ["a", 2, True, None], "modified": "2024-01-01", "page": 3, "a.b": "dot", "empty": [], "none": None,
    })
    assert source["metadata"]["a.b"] == "dot" and source["metadata"]["none"] is None  # kept as given
    assert source["filterable"] == {
        "keyword": {"tags": ["a"], "modified": ["2024-01-01"], "a%2Eb": ["dot"]},
        "number": {"tags": [2], "page": [3]},
        "boolean": {"tags": [True]},
        "date": {"modified": [1_704_067_200_000_000]},
        "present": ["tags", "modified", "page", "a.b", "empty"],
    }


def test_field_names_are_flat_and_distinct() -> None:
    keys = ["a.b", "a%2Eb", "a", "_x", "%5Fx", "ü", "a-b_c", "a b"]
    names = [field_name(k) for k in keys]
    assert len(set(names)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9%\-][A-Za-z0-9_%\-]*", n) for n in names)


def test_scores_are_inverted_exactly() -> None:
    """OpenSearch's innerproduct transform (ip + 1 above 0, 1 / (1 - ip) below) and its inverse."""
    for ip in np.linspace(-1, 1, 2001):
        assert cosine_from_score(score_from_cosine(float(ip))) == pytest.approx(float(ip), abs=1e-12)
    assert score_from_cosine(0.25) == 1.25 and score_from_cosine(-1.0) == 0.5 and score_from_cosine(0.0) == 1.0
    # float32 scores, as the server returns them, stay well inside the contract's tolerance
    for ip in (-0.999, -0.3, 0.0, 0.2, 0.9999):
        assert abs(cosine_from_score(float(np.float32(score_from_cosine(ip)))) - ip) < 1e-6


# -- translation tests: request bodies ----------------------------------------------------------------


def test_translation_of_the_index_mapping(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=384, hnsw_m=24, ef_construction=200, replicas=0)
    head, create, mapping = cluster.requests
    assert (head.method, head.path) == ("HEAD", "/docs")
    assert (create.method, create.path, mapping.path) == ("PUT", "/docs", "/docs/_mapping")
    body = create.body
    assert body["settings"] == {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}}
    properties = body["mappings"]["properties"]
    assert properties["vector"] == {
        "type": "knn_vector", "dimension": 384,
        "method": {"name": "hnsw", "engine": "lucene", "space_type": "innerproduct",
                   "parameters": {"m": 24, "ef_construction": 200}},
    }
    assert properties["chunk_id"] == {"type": "keyword"}
    assert properties["text"] == {"type": "text", "analyzer": "english"}
    assert properties["metadata"] == {"type": "object", "enabled": False}
    assert properties["filterable"]["properties"]["present"] == {"type": "keyword"}
    assert body["mappings"]["dynamic"] == "strict"
    assert body["mappings"]["dynamic_templates"] == [
        {"filterable_keyword": {"path_match": "filterable.keyword.*", "mapping": {"type": "keyword", "ignore_above": 8191}}},
        {"filterable_number": {"path_match": "filterable.number.*", "mapping": {"type": "double"}}},
        {"filterable_boolean": {"path_match": "filterable.boolean.*", "mapping": {"type": "boolean"}}},
        {"filterable_date": {"path_match": "filterable.date.*", "mapping": {"type": "long"}}},
    ]
    store.close()
    assert cluster.requests[-1].path == "/docs/_mapping"  # nothing written: close has nothing to refresh


def test_translation_of_the_faiss_engine_choice() -> None:
    method = index_body(8, engine="faiss")["mappings"]["properties"]["vector"]["method"]
    assert method["engine"] == "faiss" and method["space_type"] == "innerproduct"
    with pytest.raises(ConfigError, match="efficient filtering"):
        OpenSearchStore(8, url="http://x:9200", engine="nmslib")


def test_existing_index_of_another_dimension_or_space_is_refused(cluster: FakeCluster) -> None:
    cluster.exists = True
    cluster.mapping = index_body(8)["mappings"]
    with pytest.raises(IndexMismatchError, match="rag ingest --rebuild"):
        open_store(cluster, dimension=4)
    cluster.mapping["properties"]["vector"]["method"]["space_type"] = "l2"
    with pytest.raises(IndexMismatchError, match="l2"):
        open_store(cluster, dimension=8)
    cluster.mapping = {"properties": {"title": {"type": "text"}}}
    with pytest.raises(IndexMismatchError, match="not created by rag-platform"):
        open_store(cluster, dimension=8)
    assert not cluster.sent(method="PUT")  # an existing index is never recreated
    cluster.mapping = index_body(8)["mappings"]
    open_store(cluster, dimension=4, any_dimension=True).close()  # only to drop it


def test_translation_of_bulk_upserts_and_refresh_on_flush(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    store.upsert([
        StoredChunk("c1", np.array([3.0, 4.0]), "first", {"lang": "en", "tags": ["a", "b"]}),
        StoredChunk("c2", np.array([0.0, 2.0]), "second", {}),
        StoredChunk("c1", np.array([0.0, 5.0]), "first again", {"page": 2}),  # repeated id: the last wins
    ])
    (bulk,) = cluster.sent("/_bulk")
    assert bulk.method == "POST" and "refresh" not in bulk.params
    assert bulk.body == [
        {"index": {"_index": "docs", "_id": "c1"}},
        {"chunk_id": "c1", "text": "first again", "vector": [0.0, 1.0], "metadata": {"page": 2},
         "filterable": {"keyword": {}, "number": {"page": [2]}, "boolean": {}, "date": {}, "present": ["page"]}},
        {"index": {"_index": "docs", "_id": "c2"}},
        {"chunk_id": "c2", "text": "second", "vector": [0.0, 1.0], "metadata": {},
         "filterable": {"keyword": {}, "number": {}, "boolean": {}, "date": {}, "present": []}},
    ]
    assert not cluster.sent("/docs/_refresh")
    store.flush()
    store.flush()  # nothing new: no second refresh
    assert len(cluster.sent("/docs/_refresh")) == 1


def test_translation_of_bulk_batches_and_long_ids(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    long_id = "x" * 600
    store.upsert([StoredChunk(cid, np.ones(2), "", {}) for cid in [*(f"c{i}" for i in range(1100)), long_id]])
    assert [len(r.body) // 2 for r in cluster.sent("/_bulk")] == [500, 500, 101]
    last = cluster.sent("/_bulk")[-1].body
    assert last[-2]["index"]["_id"] == document_id(long_id) == "sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert last[-1]["chunk_id"] == long_id


def test_translation_of_deletes_ignores_unknown_ids(cluster: FakeCluster) -> None:
    store = open_store(cluster)
    cluster.bulk_status["gone"] = 404
    store.delete(["a", "gone", "a"])
    store.delete([])
    (bulk,) = cluster.sent("/_bulk")
    assert bulk.body == [{"delete": {"_index": "docs", "_id": "a"}}, {"delete": {"_index": "docs", "_id": "gone"}}]


def test_refused_documents_become_one_store_error_without_the_document(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    cluster.reply("/_bulk", {"errors": True, "items": [{"index": {"_id": "c1", "status": 400, "error": {
        "type": "mapper_parsing_exception", "reason": "failed to parse field [filterable.number.page]"}}}]})
    with pytest.raises(StoreError, match=r"1 document\(s\) refused; the first \('c1'\): failed to parse") as info:
        store.upsert([StoredChunk("c1", np.ones(2), "secret text", {})])
    assert "secret text" not in str(info.value)
    with pytest.raises(StoreError, match="cannot be stored as JSON"):
        store.upsert([StoredChunk("c2", np.ones(2), "", {"x": float("nan")})])


def test_translation_of_an_exact_search_with_the_filter(cluster: FakeCluster) -> None:
    """Up to exact_search_max candidates: the k-NN scoring script under the filter, scores inverted."""
    store = open_store(cluster, dimension=2)
    cluster.count = 40
    cluster.reply("/docs/_search", hits(("c1", 1.8), ("c2", 0.5)))
    found = store.search(np.array([0.0, 3.0]), 5, parse_filter({"lang": "en"}))
    assert [(h.chunk_id, round(h.score, 6)) for h in found] == [("c1", 0.8), ("c2", -1.0)]
    count, search = cluster.requests[-2:]
    assert count.path == "/docs/_count"
    assert count.body == {"query": {"bool": {"filter": [{"term": {"filterable.keyword.lang": "en"}}]}}}
    assert search.body == {
        "size": 5, "_source": ["chunk_id"], "track_scores": True,
        "sort": [{"_score": "desc"}, {"chunk_id": "asc"}],
        "query": {"script_score": {
            "query": {"bool": {"filter": [{"term": {"filterable.keyword.lang": "en"}}]}},
            "script": {"lang": "knn", "source": "knn_score",
                       "params": {"field": "vector", "query_value": [0.0, 1.0], "space_type": "innerproduct"}},
        }},
    }
    store.search(np.array([0.0, 3.0]), 5, parse_filter({"lang": "en"}))
    assert len(cluster.sent("/docs/_count")) == 1  # the candidate count is cached


def test_translation_of_a_knn_search_with_the_filter_inside(cluster: FakeCluster) -> None:
    """Beyond exact_search_max: efficient filtering, the filter inside the knn query; k >= ef_search."""
    store = open_store(cluster, dimension=2, exact_search_max=10, ef_search=64)
    cluster.count = 1000
    cluster.reply("/docs/_search", hits(*[(f"c{i}", 1.5) for i in range(10)]))
    found = store.search(np.array([1.0, 0.0]), 10, parse_filter({"page": {"gte": 2}}))
    assert len(found) == 10 and found[0].score == pytest.approx(0.5)
    assert cluster.requests[-1].body == {
        "size": 10, "_source": ["chunk_id"], "track_scores": True,
        "sort": [{"_score": "desc"}, {"chunk_id": "asc"}],
        "query": {"knn": {"vector": {
            "vector": [1.0, 0.0], "k": 64,
            "filter": {"bool": {"filter": [{"range": {"filterable.number.page": {"gte": 2}}}]}},
        }}},
    }
    cluster.reply("/docs/_search", hits(*[(f"c{i}", 1.5) for i in range(10)]))
    store.search(np.array([1.0, 0.0]), 10)
    assert "filter" not in cluster.requests[-1].body["query"]["knn"]["vector"]


def test_a_short_graph_walk_is_redone_exactly(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2, exact_search_max=0)
    cluster.count = 50
    cluster.reply("/docs/_search", hits(("c1", 1.5)))
    cluster.reply("/docs/_search", hits(("c1", 1.5), ("c2", 1.25), ("c3", 1.0)))
    found = store.search(np.array([1.0, 0.0]), 3)
    assert [h.chunk_id for h in found] == ["c1", "c2", "c3"]
    knn, exact = cluster.sent("/docs/_search")
    assert "knn" in knn.body["query"] and "script_score" in exact.body["query"]


def test_searches_that_cannot_match_send_nothing(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    before = len(cluster.requests)
    assert store.search(np.ones(2), 3, parse_filter({"source": {"glob": "[z-a]"}})) == []
    assert store.search(np.ones(2), 3, parse_filter({"page": {"gt": float("nan")}})) == []
    assert len(cluster.requests) == before
    assert store.search(np.ones(2), 3) == []  # an empty index: counted, not searched
    assert cluster.requests[-1].path == "/docs/_count"
    with pytest.raises(ValueError, match="k must be positive"):
        store.search(np.ones(2), 0)
    with pytest.raises(IndexMismatchError):
        store.search(np.ones(3), 1)


def test_reads_refresh_first_after_own_writes(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    store.upsert([StoredChunk("c1", np.ones(2), "", {})])
    cluster.count = 1
    assert store.count() == 1
    assert [r.path for r in cluster.requests[-2:]] == ["/docs/_refresh", "/docs/_count"]
    store.count()
    assert len(cluster.sent("/docs/_refresh")) == 1


def test_translation_of_get_vectors_ids_and_count(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    cluster.reply("/docs/_mget", {"docs": [
        {"_id": "a", "found": True, "_source": {"chunk_id": "a", "vector": [0.6, 0.8]}},
        {"_id": "zz", "found": False},
    ]})
    got = store.get_vectors(["a", "zz"])
    assert list(got) == ["a"] and got["a"].dtype == np.float32
    mget = cluster.requests[-1]
    assert mget.body == {"ids": ["a", "zz"]} and mget.params == {"_source_includes": "chunk_id,vector"}
    assert store.get_vectors([]) == {}

    cluster.reply("/docs/_search", hits(*[(f"c{i:04d}", 1.0) for i in range(1000)]))
    cluster.reply("/docs/_search", hits(("c1000", 1.0)))
    assert len(store.ids()) == 1001
    first, second = cluster.sent("/docs/_search")[-2:]
    assert first.body == {"size": 1000, "_source": ["chunk_id"], "sort": [{"chunk_id": "asc"}], "query": {"match_all": {}}}
    assert second.body["search_after"] == [1.0, "c0999"]  # the last hit's sort values
    assert store.size_bytes() == 0


def test_translation_of_keyword_search(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    index = store.keyword_index()
    assert isinstance(index, OpenSearchKeywordIndex) and index.name == "opensearch-bm25"
    cluster.reply("/docs/_search", hits(("c1", 7.5), ("c2", 1.25)))
    found = index.search("sliding window", 5, parse_filter({"lang": "en"}))
    assert [(h.chunk_id, h.score) for h in found] == [("c1", 7.5), ("c2", 1.25)]  # BM25 scores as they are
    assert cluster.requests[-1].body == {
        "size": 5, "_source": ["chunk_id"], "track_scores": True,
        "sort": [{"_score": "desc"}, {"chunk_id": "asc"}],
        "query": {"bool": {
            "must": [{"match": {"text": {"query": "sliding window"}}}],
            "filter": [{"term": {"filterable.keyword.lang": "en"}}],
        }},
    }
    assert index.search("x", 5, parse_filter({"source": {"glob": "[z-a]"}})) == []
    with pytest.raises(ValueError, match="k must be positive"):
        index.search("x", 0)


def test_translation_of_keyword_scores(cluster: FakeCluster) -> None:
    """Every stored id comes back (0.0 when no term matches: the match is optional); unknown ids do not."""
    store = open_store(cluster, dimension=2)
    index = store.keyword_index()
    cluster.reply("/docs/_search", hits(("c1", 3.5), ("c2", 0.0)))
    assert index.scores("refund policy", ["c1", "c2", "unknown", "c1"]) == {"c1": 3.5, "c2": 0.0}
    assert cluster.requests[-1].body == {
        "size": 3, "_source": ["chunk_id"],
        "query": {"bool": {
            "should": [{"match": {"text": {"query": "refund policy"}}}],
            "filter": [{"ids": {"values": ["c1", "c2", "unknown"]}}],
        }},
    }
    assert index.scores("x", []) == {}


def test_translation_of_hybrid_search_and_its_pipeline(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    cluster.reply("/docs/_search", hits(("c1", 0.9), ("c2", 0.25)))
    found = store.hybrid_search("refund", np.array([0.0, 2.0]), 5, 0.5, parse_filter({"lang": "en"}))
    assert [(h.chunk_id, h.score) for h in found] == [("c1", 0.9), ("c2", 0.25)]  # fused scores as they are
    pipeline, search = cluster.requests[-2:]
    assert (pipeline.method, pipeline.path) == ("PUT", "/_search/pipeline/rag-hybrid-a050")
    assert pipeline.body["phase_results_processors"] == [{"normalization-processor": {
        "normalization": {"technique": "min_max"},
        "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.5]}},
    }}]
    assert search.params == {"search_pipeline": "rag-hybrid-a050"}
    clauses = [{"term": {"filterable.keyword.lang": "en"}}]
    assert search.body == {
        "size": 5, "_source": ["chunk_id"],
        "query": {"hybrid": {"queries": [
            {"bool": {"must": [{"match": {"text": {"query": "refund"}}}], "filter": clauses}},
            {"knn": {"vector": {"vector": [0.0, 1.0], "k": 100, "filter": {"bool": {"filter": clauses}}}}},
        ]}},
    }
    store.hybrid_search("refund", np.array([0.0, 2.0]), 5, 0.501)  # rounds to the same pipeline: not created again
    assert len(cluster.sent(method="PUT", path="/_search/pipeline/rag-hybrid-a050")) == 1
    assert "filter" not in cluster.requests[-1].body["query"]["hybrid"]["queries"][1]["knn"]["vector"]


@pytest.mark.parametrize(("alpha", "name", "weights"), [
    (0.0, "rag-hybrid-a000", [1.0, 0.0]), (0.3, "rag-hybrid-a030", [0.7, 0.3]),
    (0.333, "rag-hybrid-a033", [0.67, 0.33]), (0.7, "rag-hybrid-a070", [0.3, 0.7]), (1.0, "rag-hybrid-a100", [0.0, 1.0]),
])
def test_translation_of_alpha_into_one_pipeline_per_rounded_value(alpha: float, name: str, weights: list[float]) -> None:
    assert OpenSearchStore.pipeline_name(alpha) == name
    body = OpenSearchStore.pipeline_body(alpha)
    combination = body["phase_results_processors"][0]["normalization-processor"]["combination"]
    assert combination["parameters"]["weights"] == weights and sum(weights) == pytest.approx(1.0)


def test_hybrid_search_validates_its_arguments(cluster: FakeCluster) -> None:
    store = open_store(cluster, dimension=2)
    with pytest.raises(ConfigError, match="alpha"):
        store.hybrid_search("q", np.ones(2), 3, 1.5)
    with pytest.raises(ValueError, match="k must be positive"):
        store.hybrid_search("q", np.ones(2), 0, 0.5)
    assert store.hybrid_search("q", np.ones(2), 3, 0.5, parse_filter({"source": {"glob": "[z-a]"}})) == []
    store.hybrid_search("q", np.ones(2), 3, 0.5, candidates=20)
    assert cluster.requests[-1].body["query"]["hybrid"]["queries"][1]["knn"]["vector"]["k"] == 20


def test_read_only_creates_nothing_and_refuses_writes(cluster: FakeCluster) -> None:
    store = open_store(cluster, read_only=True)
    assert store.count() == 0 and store.ids() == set() and store.search(np.ones(4), 3) == []
    assert store.keyword_index().search("q", 3) == []
    assert {r.method for r in cluster.requests} == {"HEAD"}  # looked for the index each time, created nothing
    with pytest.raises(StoreError, match="read-only"):
        store.upsert([StoredChunk("x", np.ones(4), "", {})])
    with pytest.raises(StoreError, match="read-only"):
        store.drop()
    cluster.exists = True  # a writer has created it since
    cluster.mapping = index_body(4)["mappings"]
    cluster.count = 7
    assert store.count() == 7


def test_drop_deletes_the_index_and_closes(cluster: FakeCluster) -> None:
    store = open_store(cluster)
    store.drop()
    assert (cluster.requests[-1].method, cluster.requests[-1].path) == ("DELETE", "/docs")
    assert cluster.requests[-1].params == {"ignore_unavailable": "true"}
    with pytest.raises(StoreError, match="closed"):
        store.count()
    store.close()  # idempotent


def test_server_errors_become_store_errors_naming_the_index(cluster: FakeCluster) -> None:
    store = open_store(cluster)
    cluster.count = 3
    cluster.reply("/docs/_count", {"error": {"type": "search_phase_execution_exception"}}, status=500)
    with pytest.raises(StoreError, match="cannot count the OpenSearch index 'docs'"):
        store.count()


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9.*check store\.url") as info:
        OpenSearchStore(4, url="http://admin:hunter2@127.0.0.1:9", timeout=2)
    assert "hunter2" not in str(info.value) and "admin:***@" in str(info.value)
    assert redact("https://u:p@h:9200/x") == "https://u:***@h:9200/x" and redact("http://h:9200") == "http://h:9200"


def test_bad_arguments_fail_at_construction() -> None:
    for kwargs, message in [
        ({"collection": "Has Upper"}, "cannot name an OpenSearch index"),
        ({"collection": "_x"}, "cannot name"),
        ({"hnsw_m": 1}, "hnsw_m"),
        ({"ef_search": 0}, "ef_search"),
        ({"exact_search_max": -1}, "exact_search_max"),
        ({"shards": 0}, "shards"),
        ({"url": None}, "store.url"),
    ]:
        with pytest.raises(ConfigError, match=message):
            OpenSearchStore(4, **{"url": "http://127.0.0.1:9", **kwargs})
    with pytest.raises(ConfigError, match="dimension"):
        OpenSearchStore(0, url="http://127.0.0.1:9")


def test_factory_reads_the_store_settings(monkeypatch) -> None:
    captured: dict[str, Any] = {}

    class Captured(OpenSearchStore):
        def __init__(self, dimension: int, **kwargs: Any) -> None:  # records instead of connecting
            captured.update(kwargs, dimension=dimension)

    monkeypatch.setattr("rag.stores.opensearch.store.OpenSearchStore", Captured)
    options = StoreSettings(kind="opensearch", url="https://search:9200", api_key="s3cret", collection="papers",
                            hnsw_m=24, hnsw_ef_search=80,
                            options={"username": "rag", "engine": "faiss", "replicas": 0, "verify_certs": "false"})
    create_opensearch_store(data_dir=Path("unused"), dimension=384, options=options, read_only=True)
    assert captured == {
        "dimension": 384, "url": "https://search:9200", "collection": "papers", "username": "rag", "password": "s3cret",
        "verify_certs": False, "ca_certs": None, "timeout": 30.0, "read_only": True, "engine": "faiss", "hnsw_m": 24,
        "ef_construction": 128, "ef_search": 80, "exact_search_max": 10_000, "shards": 1, "replicas": 0,
        "analyzer": "english", "any_dimension": False,
    }
    options = StoreSettings(url="http://x", options={"shard": 2})
    with pytest.raises(ConfigError, match="unknown opensearch store option"):
        create_opensearch_store(data_dir=Path("."), dimension=4, options=options)
    with pytest.raises(ConfigError, match=r"needs store.url"):
        create_opensearch_store(data_dir=Path("."), dimension=4, options=StoreSettings())


def test_the_store_satisfies_the_protocols(cluster: FakeCluster) -> None:
    store = open_store(cluster)
    assert isinstance(store, VectorStore)
    try:
        from rag.retrieve.keyword import KeywordIndex
        from rag.stores.base import ProvidesHybridSearch, ProvidesKeywordIndex
    except ImportError:  # the keyword protocol lands separately
        pytest.skip("rag.retrieve.keyword is not there yet")
    assert isinstance(store, ProvidesKeywordIndex) and isinstance(store.keyword_index(), KeywordIndex)
    assert isinstance(store, ProvidesHybridSearch)
    assert store.keyword_index().store is store  # what lets the engine's retriever fuse natively


def test_native_hybrid_availability_costs_no_request(cluster: FakeCluster) -> None:
    """The neural-search plugin is part of the distribution the store requires: nothing to ask the cluster."""
    store = open_store(cluster)
    before = len(cluster.requests)
    assert store.hybrid_search_unavailable() is None
    assert len(cluster.requests) == before


def test_translation_of_the_retrievers_native_hybrid_search(cluster: FakeCluster) -> None:
    """Through the engine's retriever: one ``hybrid`` request with the filter in both sub-queries, ``size``
    and the ``knn`` ``k`` at the retriever's depth, and hits carrying the fused score only."""
    from rag.core.types import Chunk
    from rag.retrieve.hybrid import HybridRetriever

    class Lookup:
        def get_chunks(self, ids):
            return {i: Chunk(i, f"doc-{i}", "text", {}) for i in ids}

    store = open_store(cluster, dimension=2)
    retriever = HybridRetriever(store, store.keyword_index(), lambda q: np.array([0.0, 3.0]), Lookup(), candidates=40,
                                native_hybrid="auto")
    cluster.reply("/docs/_search", hits(("c1", 0.9), ("c2", 0.4), ("c3", 0.1)))
    found = retriever.search("refund", 2, alpha=0.7, filter=parse_filter({"lang": "en"}))
    assert [(h.chunk.chunk_id, h.score, h.dense_score, h.bm25_score) for h in found] == [
        ("c1", 0.9, None, None), ("c2", 0.4, None, None)]
    search = cluster.sent("/docs/_search")[-1]
    assert search.params == {"search_pipeline": "rag-hybrid-a070"}
    keyword, knn = search.body["query"]["hybrid"]["queries"]
    assert search.body["size"] == knn["knn"]["vector"]["k"] == 80  # up to the union of two 40-deep sides
    assert knn["knn"]["vector"]["vector"] == [0.0, 1.0]  # the retriever's vector, normalised
    clauses = [{"term": {"filterable.keyword.lang": "en"}}]
    assert keyword["bool"]["filter"] == clauses and knn["knn"]["vector"]["filter"] == {"bool": {"filter": clauses}}
    before = len(cluster.requests)
    retriever.native_hybrid = "off"  # fuse locally: separate knn/exact and keyword searches, no pipeline
    retriever.search("refund", 2, alpha=0.7)
    assert all("search_pipeline" not in r.params for r in cluster.requests[before:])


# -- integration: the real server ----------------------------------------------------------------------

_URL = os.environ.get("RAG_OPENSEARCH_URL")
_SERVER_SKIP = pytest.mark.skipif(not _URL, reason="set RAG_OPENSEARCH_URL to run against an OpenSearch server")
_RUN = uuid.uuid4().hex[:8]


def _index_name(location: Path | str) -> str:
    # Unique per test storage and per run, so parallel or aborted runs never share an index.
    return f"rag_test_{_RUN}_{hashlib.sha1(str(location).encode()).hexdigest()[:10]}"


def _server_store(dimension: int, name: str, **kwargs: Any) -> OpenSearchStore:
    assert _URL is not None
    return OpenSearchStore(dimension, url=_URL, collection=name, password=os.environ.get("RAG_OPENSEARCH_PASSWORD"),
                           verify_certs=False, replicas=0, **kwargs)


def _delete_index(name: str) -> None:
    client = OpenSearch(hosts=[_URL], verify_certs=False, ssl_show_warn=False)
    try:
        client.indices.delete(index=name, ignore_unavailable=True)
    finally:
        client.close()


@pytest.mark.integration
@_SERVER_SKIP
class TestOpenSearchServer(VectorStoreContract, KeywordHybridContract):
    """The full shared contract, keyword and hybrid cases included, against a real server (exact below
    10,000 candidates)."""

    on_disk = False

    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return _server_store(dimension, _index_name(location))

    def drop(self, location: Path) -> None:
        _delete_index(_index_name(location))


@pytest.mark.integration
@_SERVER_SKIP
class TestOpenSearchServerGraph(VectorStoreContract):
    """The same contract with every search on the HNSW graph (the knn query, filter inside)."""

    on_disk = False

    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return _server_store(dimension, _index_name(f"graph-{location}"), exact_search_max=0, ef_search=512)

    def drop(self, location: Path) -> None:
        _delete_index(_index_name(f"graph-{location}"))


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, corpus
) -> Iterator[tuple[FaissStore, OpenSearchStore, OpenSearchStore]]:
    """FAISS flat, OpenSearch (exact) and OpenSearch forced onto the graph, with the same data."""
    faiss = FaissStore(tmp_path_factory.mktemp("congruence") / "faiss", corpus.dim, index="flat")
    name = _index_name("congruence")
    remote = _server_store(corpus.dim, name)
    for store in (faiss, remote):
        store.upsert(corpus.chunks)
        store.delete(corpus.ids[::50])  # deletes must agree too
        store.flush()
    graph = _server_store(corpus.dim, name, exact_search_max=0, read_only=True)
    yield faiss, remote, graph
    for store in (faiss, remote, graph):
        store.close()
    _delete_index(name)


@pytest.mark.integration
@_SERVER_SKIP
@pytest.mark.parametrize("k", [3, 1000])
def test_server_congruence_with_exact_faiss(engines, queries: np.ndarray, metadata_filter: Filter, k: int) -> None:
    faiss, remote, _ = engines
    for query in queries:
        expected = faiss.search(query, k, metadata_filter)
        assert_same_hits(remote.search(query, k, metadata_filter), [(h.chunk_id, h.score) for h in expected])


@pytest.mark.integration
@_SERVER_SKIP
def test_server_graph_search_agrees_with_exact_faiss_within_ann_tolerance(engines, queries, metadata_filter) -> None:
    faiss, _, graph = engines
    for query in queries:
        expected = faiss.search(query, 10, metadata_filter)
        allowed = {h.chunk_id: h.score for h in faiss.search(query, 1000, metadata_filter)}
        found = graph.search(query, 10, metadata_filter)
        assert len(found) == len(expected)
        assert all(h.chunk_id in allowed and abs(h.score - allowed[h.chunk_id]) < SCORE_TOLERANCE for h in found)
        if expected:
            recall = len({h.chunk_id for h in found} & {h.chunk_id for h in expected}) / len(expected)
            assert recall >= 0.9


@pytest.mark.integration
@_SERVER_SKIP
def test_server_same_stored_state(engines, corpus) -> None:
    faiss, remote, _ = engines
    assert faiss.ids() == remote.ids() and faiss.count() == remote.count()
    some = corpus.ids[1:40:3]
    ours, theirs = faiss.get_vectors(some), remote.get_vectors(some)
    assert ours.keys() == theirs.keys()
    for cid in ours:
        np.testing.assert_allclose(ours[cid], theirs[cid], atol=1e-6)


@pytest.mark.integration
@_SERVER_SKIP
def test_server_keyword_and_hybrid_search(tmp_path: Path) -> None:
    name = _index_name(tmp_path)
    texts = {"a": "refunds are granted within thirty days", "b": "the widget needs python", "c": "refund policy for teams"}
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.7, 0.7]}
    store = _server_store(2, name)
    try:
        store.upsert([StoredChunk(cid, np.array(vectors[cid]), text, {"team": cid != "b"})
                      for cid, text in texts.items()])
        store.flush()
        keyword = store.keyword_index()
        found = keyword.search("refund", 10)
        assert {h.chunk_id for h in found} == {"a", "c"} and all(h.score > 0 for h in found)  # english stemming
        filtered = keyword.search("refund", 10, parse_filter({"team": True}))
        assert [h.chunk_id for h in filtered] == [h.chunk_id for h in found]
        assert keyword.scores("refund", ["a", "b", "zz"]).keys() == {"a", "b"}
        assert keyword.scores("refund", ["b"]) == {"b": 0.0}
        team = parse_filter({"team": True})
        fused = {alpha: store.hybrid_search("refund", np.array([1.0, 0.0]), 3, alpha, team) for alpha in (0.0, 0.5, 1.0)}
        assert all({h.chunk_id for h in hits} <= {"a", "c"} for hits in fused.values())  # the filter holds
        assert fused[0.0][0].chunk_id == found[0].chunk_id  # keyword weight only: BM25's best
        assert fused[1.0][0].chunk_id == "a"  # dense weight only: the chunk whose vector is the query
        assert all(0.0 <= h.score <= 1.0 for hits in fused.values() for h in hits)
    finally:
        store.close()
        _delete_index(name)
