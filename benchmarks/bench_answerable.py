"""Answerability: does the calibrated probability tell a query the index can answer from one it cannot?

Every judged query of ``nfcorpus`` and ``dbpedia`` is asked twice against the index the real pipeline
ingested (``benchmarks/.cache/<name>``, shipped settings):

* **answerable**: against the full index;
* **unanswerable**: against the same index without the query's relevant documents (every chunk of every
  document its qrels judge relevant, grade > 0, is removed).

The removal is exact, not a mask over the full index's scores: the dense side scores every remaining chunk
(the FAISS store's own vectors, the query embedded by the shipped MiniLM), and the BM25 side scores as a
:class:`~rag.retrieve.bm25.BM25Index` rebuilt over the remaining chunks would, so document
frequencies and the mean length move as they would in an index that never held those documents (Lucene
BM25 in closed form over the remaining chunks' term counts, checked against a rebuilt index). Each side's top ``retrieval.candidates`` feed
:func:`rag.retrieve.answerable.gather_evidence`, the function the retriever calls; on the full index the
script checks that its evidence equals the engine's own for the first queries.

Queries are split in two by a hash of their id: the **training** halves of both datasets (pooled) fit the
shipped logistic regressions (``--fit`` writes ``retrieve/answerable_model.py``); the **held-out** halves
are what the table reports: AUROC of the probability (answerable vs unanswerable) with a bootstrap 95 % CI
over queries, against the baseline a user has today, the top fused score, with a paired bootstrap test
of the AUROC difference (resampling queries, each with both of its cases), the chosen threshold's
precision and recall for flagging unanswerable queries (and the share of answerable ones wrongly flagged),
and the reliability curve (calibration) in ten bins, drawn to ``benchmarks/results/answerable_calibration.svg``.

    python -m benchmarks.bench_answerable [--datasets nfcorpus dbpedia] [--limit N] [--fit] [--trials 10000]

Writes ``benchmarks/results/answerable.json``. The full run (373 queries) takes a few minutes after the ingest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pprint
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE, RESULTS, add_quality_arguments, judged_queries, shipped_engine, table, write_result
from rag.core.types import Evidence, ScoredId
from rag.retrieve.answerable import FEATURE_OF, FEATURES, answerable_probability, gather_evidence, model_for
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import confidence_alpha, linear_fusion

MODEL_FILE = Path(__file__).resolve().parent.parent / "retrieve" / "answerable_model.py"
MODEL_FEATURES = {
    "hybrid": FEATURES,
    "dense": ("dense_top", "dense_gap"),
    "keyword": ("log_bm25_per_term", "log_bm25_top", "bm25_gap", "term_coverage"),
}
L2 = 1.0  # ridge penalty of the fit, on standardised features (the intercept is not penalised)


class _Pretokenized:
    """An analyzer that passes token lists through (chunks analysed once) and analyses query strings."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer

    def __call__(self, text: str | list[str]) -> list[str]:
        return text if isinstance(text, list) else self.analyzer(text)


def split(qid: str) -> str:
    """``train`` or ``test``, by a stable hash of the query id."""
    return "train" if int(hashlib.sha256(qid.encode()).hexdigest(), 16) % 2 == 0 else "test"


def top(scores: np.ndarray, ids: list[str], rows: np.ndarray, k: int, positive: bool = False) -> list[ScoredId]:
    """The ``k`` best of ``rows`` by score (ties by chunk id, as the retrievers break them)."""
    picked = rows[scores[rows] > 0] if positive else rows
    if picked.size > k:
        kth = np.partition(scores[picked], picked.size - k)[picked.size - k]
        picked = picked[scores[picked] >= kth]
    order = sorted(picked.tolist(), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ScoredId(ids[i], float(scores[i])) for i in order]


def fused_top(dense_all: np.ndarray, bm25_all: np.ndarray, dense: list[ScoredId],
              keyword: list[ScoredId], ids: list[str], position: dict[str, int], retrieval: Any) -> float:
    """The top fused score the shipped linear, confidence-weighted fusion gives (today's only signal)."""
    union = {s.chunk_id for s in dense} | {s.chunk_id for s in keyword}
    if not union:
        return 0.0
    dense_map = {cid: float(dense_all[position[cid]]) for cid in union}
    bm25_map = {cid: float(bm25_all[position[cid]]) for cid in union}
    alpha = confidence_alpha(retrieval.alpha, dense, keyword, retrieval.confidence_power)
    return linear_fusion(dense_map, bm25_map, alpha)[0].score


def collect(name: str, limit: int | None, cached: bool) -> list[dict[str, Any]]:
    """One record per (query, case): the evidence, the fused top score, the label and the split.

    With ``cached``, the raw top-10 lists of an earlier run (``benchmarks/.cache/answerable-*.json``) are
    reused and only the evidence is recomputed from them (for iterating on the features and the fit).
    """
    cache = CACHE / f"answerable-{name}-{limit or 'all'}.json"
    if cached and cache.is_file():
        records = json.loads(cache.read_text())
        for r in records:
            raw = r["raw"]
            r["evidence"] = gather_evidence(
                [ScoredId(c, s) for c, s in raw["dense"]], [ScoredId(c, s) for c, s in raw["keyword"]],
                query_terms=raw["query_terms"], top_terms=raw["top_terms"], keyword_name="bm25s")
        return records
    engine = shipped_engine(name)
    retrieval = engine.settings.retrieval
    depth = retrieval.candidates
    queries, qrels = judged_queries(name, limit)
    started = time.perf_counter()
    ids, position, doc_of, matrix, tokens = index_arrays(engine)
    analyzer = engine.bm25.analyzer
    full_bm25 = _bm25(ids, tokens, analyzer, retrieval)
    exact = ExactBM25(tokens, retrieval.bm25_k1, retrieval.bm25_b, retrieval.bm25_method)
    print(f"[{name}] {len(ids)} chunks, {len(queries)} judged queries; loaded and analysed in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    everything = np.arange(len(ids))
    records: list[dict[str, Any]] = []
    checked = 0
    for number, (qid, text) in enumerate(queries.items(), start=1):
        vector = engine.embedder.encode_query(text)
        dense_all = matrix @ np.asarray(vector, dtype=np.float32)
        terms = analyzer(text)
        removed = np.isin(doc_of, list(qrels[qid]))
        for label, rows in ((1, everything), (0, np.flatnonzero(~removed))):
            if label == 1:
                bm25_all = full_bm25.score_all(text)
                if number <= 3:  # the closed form must be bm25s's own scores
                    assert np.allclose(exact.scores(terms, np.ones(len(ids), dtype=bool)), bm25_all, rtol=1e-4, atol=1e-4)
            else:
                bm25_all = exact.scores(terms, ~removed)
                if number <= 3:  # ... and an index rebuilt without the removed chunks must agree
                    kept = rows.tolist()
                    rebuilt = _bm25([ids[i] for i in kept], [tokens[i] for i in kept], analyzer, retrieval)
                    assert np.allclose(rebuilt.score_all(text), bm25_all[rows], rtol=1e-4, atol=1e-4), qid
            dense = top(dense_all, ids, rows, depth)
            keyword = top(bm25_all, ids, rows, depth, positive=True)
            top_terms = tokens[position[keyword[0].chunk_id]] if keyword else None
            evidence = gather_evidence(dense, keyword, query_terms=terms, top_terms=top_terms, keyword_name="bm25s")
            if label == 1 and checked < 3:
                # The script's evidence must be the engine's: same lists, same function.
                _, engine_evidence = engine.retriever.search_with_evidence(text, 10)
                assert engine_evidence is not None
                for field in ("dense_top", "bm25_top", "bm25_gap", "agreement", "term_coverage", "bm25_per_term"):
                    mine, theirs = getattr(evidence, field), getattr(engine_evidence, field)
                    assert abs(mine - theirs) < 1e-4, (qid, field, mine, theirs)
                checked += 1
            records.append({
                "dataset": name, "qid": qid, "label": label, "split": split(qid), "evidence": evidence,
                "raw": {"dense": [(h.chunk_id, h.score) for h in dense[:10]],
                        "keyword": [(h.chunk_id, h.score) for h in keyword[:10]],
                        "query_terms": terms, "top_terms": top_terms},
                "fused_top": fused_top(dense_all, bm25_all, dense, keyword, ids, position, retrieval),
                "removed_chunks": int(removed.sum()) if label == 0 else 0,
            })
        if number % 50 == 0:
            print(f"[{name}] {number}/{len(queries)} queries, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    engine.close()
    cache.write_text(json.dumps([{k: v for k, v in r.items() if k != "evidence"} for r in records]))
    return records


class ExactBM25:
    """Lucene BM25 (bm25s's ``lucene`` method) in closed form over any subset of the chunks.

    Removing documents changes every term's document frequency and the mean length; rebuilding a bm25s
    index per query is exact but slow, so this scores a query's terms directly from a term-frequency
    matrix with the subset's own statistics. The script asserts it equals bm25s on the full index and on
    rebuilt indexes for the first queries.
    """

    def __init__(self, tokens: list[list[str]], k1: float, b: float, method: str) -> None:
        from collections import Counter

        from scipy.sparse import csc_matrix

        if method != "lucene":
            sys.exit(f"bench_answerable's closed-form BM25 is Lucene's; retrieval.bm25_method is {method!r}")
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        for i, toks in enumerate(tokens):
            for term, count in Counter(toks).items():
                rows.append(i)
                cols.append(self.vocab.setdefault(term, len(self.vocab)))
                vals.append(count)
        self.tf = csc_matrix((vals, (rows, cols)), shape=(len(tokens), len(self.vocab)), dtype=np.float64)
        self.length = np.array([len(t) for t in tokens], dtype=np.float64)
        self.k1, self.b = k1, b

    def scores(self, terms: list[str], keep: np.ndarray) -> np.ndarray:
        """Every chunk's score for ``terms`` in the index of the ``keep`` rows (the others score 0)."""
        n = int(keep.sum())
        mean_length = float(self.length[keep].mean())
        norm = self.k1 * (1 - self.b + self.b * self.length / mean_length)
        out = np.zeros(len(keep))
        for term in terms:  # a repeated query term counts again, as in bm25s
            column = self.vocab.get(term)
            if column is None:
                continue
            start, end = self.tf.indptr[column], self.tf.indptr[column + 1]
            rows, tf = self.tf.indices[start:end], self.tf.data[start:end]
            inside = keep[rows]
            rows, tf = rows[inside], tf[inside]
            df = len(rows)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            out[rows] += idf * tf / (tf + norm[rows])
        return out.astype(np.float32)


def index_arrays(engine: Any) -> tuple[list[str], dict[str, int], np.ndarray, np.ndarray, list[list[str]]]:
    """The whole index as arrays, one row per chunk in catalog order: ``(ids, position of each id,
    doc_id of each row, the stored vectors as a float32 matrix, each chunk's BM25 terms)``."""
    rows = list(engine.catalog.iter_chunks())
    ids = [cid for cid, _, _ in rows]
    vectors = engine.store.get_vectors(ids)
    return (
        ids,
        {cid: i for i, cid in enumerate(ids)},
        np.array([meta["doc_id"] for _, _, meta in rows]),
        np.stack([vectors[cid] for cid in ids]).astype(np.float32),
        [engine.bm25.analyzer(text) for _, text, _ in rows],
    )


def _bm25(ids: list[str], tokens: list[list[str]], analyzer: Any, retrieval: Any) -> BM25Index:
    index = BM25Index(retrieval.bm25_method, retrieval.bm25_k1, retrieval.bm25_b, analyzer=_Pretokenized(analyzer))
    index.build(ids, tokens, [{}] * len(ids))  # type: ignore[arg-type]  # token lists pass through
    return index


# -- the model ------------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> dict[str, Any]:
    """Ridge logistic regression by Newton's method on standardised features; returns the shipped form."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z.T * (p * (1 - p))) @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"intercept": float(w[0]), "coef": [float(v) for v in w[1:]], "mean": [float(v) for v in mean],
            "scale": [float(v) for v in scale]}


def fit(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The three shipped models, each fitted on the training records of every dataset pooled."""
    train = [r for r in records if r["split"] == "train"]
    y = np.array([r["label"] for r in train], dtype=float)
    models: dict[str, dict[str, Any]] = {}
    for model, features in MODEL_FEATURES.items():
        models[model] = {"features": list(features)}  # feature_vector reads the names from here
        x = np.array([_features(r["evidence"], features) for r in train])
        models[model].update(fit_logistic(x, y))
        models[model]["trained_on"] = {"queries": len(train) // 2, "cases": len(train)}
    return models


def _features(evidence: Evidence, features: tuple[str, ...]) -> list[float]:
    return [FEATURE_OF[name](evidence) for name in features]


def write_model(models: dict[str, dict[str, Any]], datasets: list[str]) -> None:
    header = (
        '"""Coefficients of the answerability models, written by ``python -m benchmarks.bench_answerable --fit``.\n\n'
        f"Fitted on the training half of the judged queries of {', '.join(datasets)} (see the script); do not\n"
        "edit by hand: re-run the script. Each model standardises its features with ``mean`` and ``scale``.\n"
        '"""\n\nfrom typing import Any\n\nMODELS: dict[str, dict[str, Any]] = '
    )
    MODEL_FILE.write_text(header + pprint.pformat(models, width=110, sort_dicts=False) + "\n", encoding="utf-8")


# -- measures -------------------------------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The probability that a random answerable case scores above a random unanswerable one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def bootstrap(records: list[dict[str, Any]], a: str, b: str, trials: int, seed: int = 0) -> dict[str, Any]:
    """AUROC of score ``a`` (CI) and its difference from ``b``'s, resampling queries with both cases."""
    by_query: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_query.setdefault(r["qid"], []).append(r)
    groups = list(by_query.values())
    rng = np.random.default_rng(seed)
    sa = [np.array([r[a] for r in g]) for g in groups]
    sb = [np.array([r[b] for r in g]) for g in groups]
    labels = [np.array([r["label"] for r in g]) for g in groups]
    values, diffs = [], []
    for _ in range(trials):
        pick = rng.integers(0, len(groups), len(groups))
        y = np.concatenate([labels[i] for i in pick])
        ra = auroc(np.concatenate([sa[i] for i in pick]), y)
        rb = auroc(np.concatenate([sb[i] for i in pick]), y)
        values.append(ra)
        diffs.append(ra - rb)
    diffs_arr = np.array(diffs)
    # Two-sided bootstrap p-value of "no difference": twice the share of resamples on the other side of 0.
    p = min(1.0, 2 * min((diffs_arr <= 0).mean(), (diffs_arr >= 0).mean()))
    return {"ci": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "diff_ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))], "p": float(p)}


def threshold_stats(records: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """Flagging ``answerable < threshold`` as unanswerable: precision, recall, answerable flagged."""
    flagged = [r for r in records if r["answerable"] < threshold]
    unanswerable = [r for r in records if r["label"] == 0]
    answerable = [r for r in records if r["label"] == 1]
    hits = sum(1 for r in flagged if r["label"] == 0)
    return {
        "threshold": threshold,
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(unanswerable) if unanswerable else float("nan"),
        "answerable_flagged": sum(1 for r in flagged if r["label"] == 1) / len(answerable) if answerable else float("nan"),
    }


MAX_FLAGGED = 0.05
"""The shipped threshold may skip generation for at most this share of answerable training cases: telling a
user that the documents do not cover a question they do cover costs more than one weak answer."""


def suggest_threshold(train: list[dict[str, Any]]) -> float:
    """The highest multiple of 0.05 whose flagged share of answerable training cases is at most MAX_FLAGGED."""
    best = 0.0
    for step in range(1, 20):
        if threshold_stats(train, step / 20)["answerable_flagged"] <= MAX_FLAGGED:
            best = step / 20
    return best


def reliability(records: list[dict[str, Any]], bins: int = 10) -> list[dict[str, Any]]:
    """Per probability bin: cases, mean predicted probability, observed share answerable."""
    out = []
    for i in range(bins):
        low, high = i / bins, (i + 1) / bins
        inside = [r for r in records if low <= r["answerable"] < high or (i == bins - 1 and r["answerable"] == 1.0)]
        if inside:
            out.append({"bin": [low, high], "n": len(inside),
                        "predicted": float(np.mean([r["answerable"] for r in inside])),
                        "observed": float(np.mean([r["label"] for r in inside]))})
    return out


def plot(curves: dict[str, list[dict[str, Any]]], aurocs: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="#57606a", linestyle=":", linewidth=1, label="perfect calibration")
    for (name, curve), colour in zip(curves.items(), ("#0969da", "#1a7f37", "#9a6700")):
        ax.plot([c["predicted"] for c in curve], [c["observed"] for c in curve], marker="o", color=colour,
                label=f"{name} (held-out AUROC {aurocs[name]:.3f})")
    ax.set_xlabel("predicted probability answerable")
    ax.set_ylabel("observed share answerable")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_arguments(parser)
    parser.add_argument("--fit", action="store_true", help="Refit the models and write retrieve/answerable_model.py.")
    parser.add_argument("--cached", action="store_true",
                        help="Reuse the retrieval results of the last run (benchmarks/.cache) and only refit/report.")
    args = parser.parse_args()
    records = [r for name in args.datasets for r in collect(name, args.limit, args.cached)]
    if args.fit:
        models = fit(records)
        write_model(models, args.datasets)
        import importlib

        import rag.retrieve.answerable_model as shipped

        importlib.reload(shipped)
        from rag.retrieve import answerable

        answerable.MODELS.clear()
        answerable.MODELS.update(shipped.MODELS)
    for r in records:
        r["answerable"] = answerable_probability(r["evidence"])
        r["dense_top"] = r["evidence"].dense_top
        r["model"] = model_for(r["evidence"])
    from rag.core.settings import RetrievalSettings

    threshold = RetrievalSettings().answerable_threshold
    train = [r for r in records if r["split"] == "train"]
    suggested = suggest_threshold(train)
    print(f"threshold in force (retrieval.answerable_threshold): {threshold}; the training split suggests "
          f"{suggested} (the highest multiple of 0.05 that flags at most {MAX_FLAGGED:.0%} of answerable cases)")
    results: dict[str, Any] = {"threshold": threshold, "suggested_threshold": suggested, "datasets": {}}
    rows, curves, aurocs = [], {}, {}
    for name in [*args.datasets, "all"]:
        held = [r for r in records if r["split"] == "test" and (name == "all" or r["dataset"] == name)]
        y = np.array([r["label"] for r in held])
        ours = auroc(np.array([r["answerable"] for r in held]), y)
        base = auroc(np.array([r["fused_top"] for r in held]), y)
        dense = auroc(np.array([r["dense_top"] for r in held]), y)
        vs_fused = bootstrap(held, "answerable", "fused_top", args.trials)
        vs_dense = bootstrap(held, "answerable", "dense_top", args.trials)
        stats = threshold_stats(held, threshold)
        curves[name], aurocs[name] = reliability(held), ours
        results["datasets"][name] = {
            "held_out_queries": len(held) // 2, "auroc": ours, "auroc_ci": vs_fused["ci"],
            "auroc_top_fused_score": base, "vs_fused": vs_fused, "auroc_dense_top": dense, "vs_dense_top": vs_dense,
            "at_threshold": stats, "reliability": curves[name],
            "thresholds": [threshold_stats(held, t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)],
        }
        rows.append([name, len(held) // 2, ours, f"[{vs_fused['ci'][0]:.3f}, {vs_fused['ci'][1]:.3f}]", base,
                     f"{vs_fused['p']:.4f}", dense, f"{vs_dense['p']:.4f}", stats["precision"], stats["recall"],
                     stats["answerable_flagged"]])
    print(table(["dataset", "held-out queries", "AUROC answerable", "95 % CI", "AUROC top fused score",
                 "p vs fused", "AUROC dense top", "p vs dense top", f"precision @ {threshold}",
                 f"recall @ {threshold}", "answerable flagged"], rows))
    print()
    for name in [*args.datasets, "all"]:
        print(f"reliability, {name} (held out):")
        print(table(["bin", "cases", "mean predicted", "observed answerable"],
                    [[f"{c['bin'][0]:.1f}-{c['bin'][1]:.1f}", c["n"], c["predicted"], c["observed"]]
                     for c in curves[name]]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(curves, aurocs, RESULTS / "answerable_calibration.svg")
    from rag.retrieve.answerable import MODELS

    results["models"] = MODELS
    results["limit"] = args.limit
    results["trials"] = args.trials
    path = write_result("answerable", results)
    print(f"\nwrote {path} and {RESULTS / 'answerable_calibration.svg'}")


if __name__ == "__main__":
    main()
