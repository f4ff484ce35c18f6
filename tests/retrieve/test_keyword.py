"""The keyword side as a protocol: LocalBM25 agrees with BM25Index, and the retriever over it ranks and
scores exactly as the retriever over BM25Index did before the protocol existed (recorded below)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_fusion import ListStore, Lookup

from rag.core.errors import ConfigError
from rag.core.filters import parse_filter
from rag.core.types import Chunk
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores.base import StoredChunk

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def _world() -> tuple[list[Chunk], list[StoredChunk]]:
    """80 chunks of skewed random words (common and rare terms), 4 chunks per document, random vectors."""
    rng = np.random.default_rng(7)
    chunks, stored = [], []
    for i in range(80):
        n = int(rng.integers(3, 12))
        p = np.linspace(2.0, 0.2, len(WORDS))
        p /= p.sum()
        text = " ".join(rng.choice(WORDS, n, p=p)) + f" item{i}"
        meta = {"doc_id": f"d{i // 4}", "page": int(i % 7), "lang": "en" if i % 3 else "de"}
        vec = rng.normal(size=8).astype(np.float32)
        vec /= np.linalg.norm(vec)
        chunks.append(Chunk(f"c{i:02d}", meta["doc_id"], text, meta))
        stored.append(StoredChunk(f"c{i:02d}", vec, text, meta))
    return chunks, stored


@pytest.fixture(scope="module")
def world() -> tuple[list[Chunk], list[StoredChunk], BM25Index]:
    chunks, stored = _world()
    index = BM25Index(analyzer=None)
    index.build([c.chunk_id for c in chunks], [c.text for c in chunks], [c.metadata for c in chunks])
    return chunks, stored, index


# -- LocalBM25 honours the protocol and agrees with BM25Index --------------------------------------


QUERIES = ["gamma delta", "kappa", "iota theta item3", "alpha beta gamma delta epsilon", "nothing here", "the"]
FILTERS = [None, {"lang": "en"}, {"page": {"gte": 3}}, {"doc_id": "d2"}, {"lang": "fr"}]


def test_local_bm25_is_a_keyword_index(world) -> None:
    _, _, index = world
    local = LocalBM25(index)
    assert isinstance(local, KeywordIndex) and local.name == "bm25s" and len(local) == len(index)
    assert not isinstance(index, KeywordIndex)  # a bare BM25Index is not one: no scores(), no name


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("spec", FILTERS)
def test_local_search_equals_bm25_index_search(world, query: str, spec) -> None:
    chunks, _, index = world
    flt = parse_filter(spec) if spec else None
    for k in (1, 5, 100):
        assert LocalBM25(index).search(query, k, flt) == index.search(query, k, flt)
    found = LocalBM25(index).search(query, 100, flt)
    allowed = {c.chunk_id for c in chunks if flt is None or flt.matches(c.metadata)}
    assert {s.chunk_id for s in found} <= allowed  # the filter is inside the search
    assert all(s.score > 0 for s in found)  # only chunks sharing a term with the query


@pytest.mark.parametrize("query", QUERIES)
def test_scores_are_the_true_bm25_scores(world, query: str) -> None:
    chunks, _, index = world
    local = LocalBM25(index)
    ids = [c.chunk_id for c in chunks]
    expected = index.score_all(query)
    cold = LocalBM25(index).scores(query, ids)  # nothing cached
    local.search(query, 3, parse_filter({"lang": "de"}))  # caches the unfiltered array for this query
    warm = local.scores(query, [*ids, "unknown"])
    assert cold == warm == {cid: pytest.approx(float(s)) for cid, s in zip(ids, expected)}
    assert "unknown" not in warm  # ids the index lacks are left out, not zero
    for hit in local.search(query, 100):
        assert warm[hit.chunk_id] == hit.score
    assert local.scores(query, []) == {}


def test_search_rejects_bad_k(world) -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        LocalBM25(world[2]).search("alpha", 0)


def test_the_score_cache_is_per_thread(world) -> None:
    """Threads sharing one LocalBM25 each get the scores of their own query."""
    chunks, _, index = world
    local = LocalBM25(index)
    ids = [c.chunk_id for c in chunks]
    expected = {q: index.scores_of(index.score_all(q), ids) for q in QUERIES}
    errors: list[str] = []
    barrier = threading.Barrier(len(QUERIES))

    def work(query: str) -> None:
        barrier.wait()
        for _ in range(50):
            local.search(query, 10)
            if local.scores(query, ids) != expected[query]:
                errors.append(query)

    threads = [threading.Thread(target=work, args=(q,)) for q in QUERIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_retriever_refuses_a_bare_bm25_index(world) -> None:
    chunks, stored, index = world
    with pytest.raises(ConfigError, match="LocalBM25"):
        HybridRetriever(ListStore(stored), index, lambda q: stored[0].vector, Lookup(chunks))  # type: ignore[arg-type]


# -- the retriever over LocalBM25 reproduces the retriever over BM25Index ---------------------------

# (query, search arguments): fixed and adaptive linear fusion at both endpoints, RRF, filters inside both
# searches, a query no chunk matches, and a HyDE-style vector override.
CASES = [
    ("gamma delta", {"alpha": 0.5}),
    ("gamma delta", {"alpha": 0.0}),
    ("gamma delta", {"alpha": 1.0}),
    ("kappa iota theta", {"alpha": 0.3}),
    ("kappa iota theta", {"alpha": 0.7, "fusion": "rrf"}),
    ("alpha beta eta item7", {"alpha": 0.5, "filter": {"lang": "en"}}),
    ("zeta", {"alpha": 0.5, "filter": {"page": {"gte": 3}}}),
    ("nothing matches", {"alpha": 0.5}),
    ("epsilon kappa", {"alpha": 0.5, "vector_of": 11}),
]

# HybridRetriever(ListStore, BM25Index, ..., candidates=12).search(query, 8, **arguments) before the keyword
# protocol (commit 4904cd4): (chunk id, fused score, dense score, BM25 score), rounded to 6 decimals.
RECORDED = [
    [
        ('c05', 0.997953, 1.0, 0.38799), ('c04', 0.871037, 0.806461, 0.187518),
        ('c78', 0.767278, 0.642428, 0.565806), ('c18', 0.750973, 0.618565, 0.446528),
        ('c03', 0.732732, 0.592568, 0.247792), ('c17', 0.700865, 0.546089, 0.0),
        ('c41', 0.690724, 0.525892, 0.425813), ('c31', 0.67008, 0.495613, 0.280898),
    ],
    [
        ('c74', 1.0, None, 0.682708), ('c55', 0.817486, None, 0.659293), ('c61', 0.549689, None, 0.624936),
        ('c24', 0.528557, None, 0.622225), ('c08', 0.277806, None, 0.590055), ('c20', 0.277806, None, 0.590055),
        ('c28', 0.237576, None, 0.584894), ('c52', 0.229051, None, 0.5838),
    ],
    [
        ('c05', 1.0, 1.0, None), ('c04', 0.679666, 0.806461, None), ('c78', 0.40817, 0.642428, None),
        ('c18', 0.368673, 0.618565, None), ('c03', 0.325645, 0.592568, None), ('c17', 0.248716, 0.546089, None),
        ('c41', 0.215286, 0.525892, None), ('c31', 0.165171, 0.495613, None),
    ],
    [
        ('c05', 0.836533, 1.0, 0.553663), ('c78', 0.778228, 0.642428, 2.046613),
        ('c04', 0.710599, 0.806461, 0.499793), ('c31', 0.575495, 0.495613, 1.026662),
        ('c17', 0.551911, 0.546089, 0.52535), ('c18', 0.53934, 0.618565, 0.0), ('c03', 0.523216, 0.592568, 0.0),
        ('c77', 0.512479, 0.359945, 1.219622),
    ],
    [
        ('c78', 0.016029, 0.642428, 2.046613), ('c31', 0.01458, 0.495613, 1.026662), ('c05', 0.011475, 1.0, None),
        ('c04', 0.01129, 0.806461, None), ('c18', 0.010937, 0.618565, None), ('c03', 0.010769, 0.592568, None),
        ('c17', 0.010606, 0.546089, None), ('c41', 0.010448, 0.525892, None),
    ],
    [
        ('c05', 0.907496, 1.0, 0.66717), ('c04', 0.822848, 0.806461, 0.877907),
        ('c41', 0.685359, 0.525892, 0.997398), ('c17', 0.653212, 0.546089, 0.459511),
        ('c31', 0.613369, 0.495613, 0.290825), ('c29', 0.572037, 0.433503, 0.180113),
        ('c46', 0.559015, 0.39582, 0.264694), ('c49', 0.557626, 0.305047, 0.845823),
    ],
    [
        ('c05', 0.99544, 1.0, 0.0), ('c04', 0.861364, 0.806461, 0.0), ('c18', 0.735259, 0.618565, 0.433599),
        ('c03', 0.713189, 0.592568, 0.0), ('c17', 0.68099, 0.546089, 0.0), ('c41', 0.669772, 0.525892, 0.296144),
        ('c31', 0.646023, 0.495613, 0.0), ('c75', 0.590966, 0.41194, 0.310551),
    ],
    [
        ('c05', 1.0, 1.0, 0.0), ('c04', 0.679666, 0.806461, 0.0), ('c78', 0.40817, 0.642428, 0.0),
        ('c18', 0.368673, 0.618565, 0.0), ('c03', 0.325645, 0.592568, 0.0), ('c17', 0.248716, 0.546089, 0.0),
        ('c41', 0.215286, 0.525892, 0.0), ('c31', 0.165171, 0.495613, 0.0),
    ],
    [
        ('c11', 0.833881, 1.0, 0.349758), ('c62', 0.612079, 0.767221, 0.0), ('c27', 0.539232, 0.544713, 0.406075),
        ('c70', 0.536682, 0.394924, 0.926771), ('c52', 0.52636, 0.336389, 1.080637),
        ('c35', 0.511309, 0.531887, 0.303271), ('c24', 0.505703, 0.523525, 0.303271),
        ('c63', 0.483072, 0.505546, 0.246994),
    ],
]


@pytest.mark.parametrize(("case", "expected"), list(zip(CASES, RECORDED)), ids=[f"case{i}" for i in range(len(CASES))])
def test_retriever_over_local_bm25_reproduces_recorded_results(world, case, expected) -> None:
    chunks, stored, index = world
    query, arguments = case
    arguments = dict(arguments)
    if "filter" in arguments:
        arguments["filter"] = parse_filter(arguments["filter"])
    if "vector_of" in arguments:
        arguments["vector"] = stored[arguments.pop("vector_of")].vector
    query_vector = stored[5].vector
    retriever = HybridRetriever(
        ListStore(stored), LocalBM25(index), lambda q: query_vector, Lookup(chunks), candidates=12
    )
    hits = retriever.search(query, 8, **arguments)
    got = [(h.chunk.chunk_id, h.score, h.dense_score, h.bm25_score) for h in hits]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for g, e in zip(got, expected):
        for value, recorded in zip(g[1:], e[1:]):
            assert (value is None) == (recorded is None)
            if value is not None:
                assert value == pytest.approx(recorded, abs=2e-6)
