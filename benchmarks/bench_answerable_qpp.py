"""Answerability, follow-up: do query-performance-prediction (QPP) features make the probability discriminate?

The shipped answerability model (:mod:`rag.retrieve.answerable`, measured by ``bench_answerable.py``) reads the
top-10 raw scores of both retrievers. This script asks whether the predictors the QPP literature reports add
anything, on the same protocol, the same queries and the same hash split as ``bench_answerable.py``: every
judged NFCorpus and DBpedia query asked against the full benchmark index (answerable) and against the index
without its relevant documents (unanswerable, exact removal: dense scores over the remaining vectors, Lucene
BM25 with the remaining chunks' statistics, ``bench_answerable.ExactBM25``). Each retriever's top 100
(``retrieval.candidates``, what the retriever holds at query time) gives:

* **score distribution** over the top k (k = 10, 20, 50, 100) of each side: NQC (standard deviation over the
  mean), WIG (dense: mean minus the query's mean cosine over the whole index; BM25: mean per query term), SMV,
  the standard deviation; the z-score of the top score in the top 100 and against the index's cosine
  distribution, the top score minus the index's 99th percentile cosine, the scores at ranks 1..100;
* **coherence** (clarity-like, from the hits' stored vectors): mean pairwise cosine of the dense top 10, the
  query's cosine to the centroid of the top 10 and top 100 and those centroids' norms, the cosine of the query
  to the BM25 top hits, and the spatial autocorrelation of the scores (Diaz 2007: correlation of each hit's
  score with the mean score of its five nearest hits) over the top 20, 50, 100;
* **pre-retrieval**: maximum and mean IDF of the query terms, the share of query terms absent from the index,
  the query length; **IDF-weighted coverage** of the query terms by the best hits of each side.

Each family is added to the shipped features, the logistic regression refitted (``bench_answerable.fit_logistic``,
the same ridge) on the training halves pooled and measured on the held-out halves: AUROC per dataset and
pooled, with the paired bootstrap of the difference from the shipped model (resampling queries, each with both
of its cases). A forward selection by 5-fold cross-validation inside the training half picks a subset without
looking at the held-out half. Two diagnostics say where the ceiling is: the within-query win rate (how often a
query's answerable case scores above its own unanswerable case) of the shipped model and of a conditional
logit fitted on the within-query feature differences, and the share of queries whose top-10 lists the removal
leaves unchanged.

    python -m benchmarks.bench_answerable_qpp [--datasets nfcorpus dbpedia] [--limit N] [--cached] [--trials 2000]

Writes ``benchmarks/results/answerable_qpp.json``. About a minute of CPU per run after the ingest; ``--cached``
reuses the features of the last run (``benchmarks/.cache/answerable-qpp-*.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from typing import Any

import numpy as np

from benchmarks.bench_answerable import ExactBM25, auroc, bootstrap, collect, fit_logistic, index_arrays, split, top
from benchmarks.common import CACHE, add_quality_arguments, judged_queries, shipped_engine, table, write_result
from rag.retrieve.answerable import FEATURE_OF, answerable_probability

SHIPPED = ("dense_top", "dense_gap", "log_bm25_per_term", "log_bm25_top", "bm25_gap", "term_coverage",
           "agreement", "dense_top_in_bm25")
DEPTHS = (10, 20, 50, 100)
RANKS = (1, 2, 5, 10, 20, 50, 100)


def _distribution(s: np.ndarray, prefix: str, reference: float, terms: int) -> dict[str, float]:
    """NQC, WIG, SMV and the spread of the top-k scores ``s`` (padded with 0 to 100)."""
    f: dict[str, float] = {}
    for k in DEPTHS:
        top_k = s[:k]
        mean = float(top_k.mean())
        f[f"{prefix}_std{k}"] = float(top_k.std())
        f[f"{prefix}_nqc{k}"] = float(top_k.std()) / max(abs(mean), 1e-6)
        f[f"{prefix}_wig{k}"] = (mean - reference) if prefix == "d" else mean / math.sqrt(max(terms, 1))
        ratio = np.maximum(top_k, 1e-6) / max(mean, 1e-6)
        f[f"{prefix}_smv{k}"] = float(np.mean(top_k * np.abs(np.log(ratio))))
    f[f"{prefix}_z"] = float((s[0] - s.mean()) / max(s.std(), 1e-6))
    for r in RANKS:
        f[f"{prefix}@{r}"] = float(s[r - 1]) if prefix == "d" else math.log1p(float(s[r - 1]))
    return f


def _autocorrelation(vectors: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Correlation of each top-k hit's score with the mean score of its five most similar top-k hits."""
    if len(scores) < max(k, 6):
        return 0.0
    w = vectors[:k] @ vectors[:k].T
    np.fill_diagonal(w, -np.inf)
    smoothed = scores[:k][np.argsort(-w, axis=1)[:, :5]].mean(axis=1)
    if scores[:k].std() == 0 or smoothed.std() == 0:
        return 0.0
    return float(np.corrcoef(scores[:k], smoothed)[0, 1])


def collect_features(name: str, limit: int | None, cached: bool) -> list[dict[str, Any]]:
    """One record per (query, case) with every candidate feature (the shipped ones come from the evidence)."""
    cache = CACHE / f"answerable-qpp-{name}-{limit or 'all'}.json"
    if cached and cache.is_file():
        records = json.loads(cache.read_text())
    else:
        records = _collect(name, limit)
        cache.write_text(json.dumps(records))
    shipped = {(r["qid"], r["label"]): r for r in collect(name, limit, cached=True)}
    for r in records:
        evidence = shipped[(r["qid"], r["label"])]["evidence"]
        r["shipped"] = answerable_probability(evidence)
        r["f"].update({k: FEATURE_OF[k](evidence) for k in SHIPPED})
    return records


def _collect(name: str, limit: int | None) -> list[dict[str, Any]]:
    engine = shipped_engine(name)
    retrieval = engine.settings.retrieval
    depth = retrieval.candidates
    queries, qrels = judged_queries(name, limit)
    ids, position, doc_of, matrix, tokens = index_arrays(engine)
    analyzer = engine.bm25.analyzer
    token_sets = [set(t) for t in tokens]
    exact = ExactBM25(tokens, retrieval.bm25_k1, retrieval.bm25_b, retrieval.bm25_method)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    for number, (qid, text) in enumerate(queries.items(), start=1):
        query = np.asarray(engine.embedder.encode_query(text), dtype=np.float32)
        dense_all = matrix @ query
        terms = analyzer(text)
        removed = np.isin(doc_of, list(qrels[qid]))
        for label, keep in ((1, np.ones(len(ids), dtype=bool)), (0, ~removed)):
            rows = np.flatnonzero(keep)
            dense = top(dense_all, ids, rows, depth)
            keyword = top(exact.scores(terms, keep), ids, rows, depth, positive=True)
            d = np.array([h.score for h in dense] + [0.0] * (depth - len(dense)))
            kw = np.array([h.score for h in keyword] + [0.0] * (depth - len(keyword)))
            corpus = dense_all[rows]
            mean, std = float(corpus.mean()), float(corpus.std())
            dv = matrix[[position[h.chunk_id] for h in dense]]
            kv = matrix[[position[h.chunk_id] for h in keyword]]
            n = len(rows)
            dfs = {t: _df(exact, t, keep) for t in terms}
            idf = {t: (math.log(1 + (n - df + 0.5) / (df + 0.5)) if df else 0.0) for t, df in dfs.items()}
            mass = sum(idf.values()) or 1.0

            def coverage(cid: str) -> float:
                have = token_sets[position[cid]]
                return sum(v for t, v in idf.items() if t in have) / mass  # noqa: B023 (used in this iteration)

            f = {**_distribution(d, "d", mean, len(terms)), **_distribution(kw, "k", 0.0, len(terms))}
            pairwise = dv[:10] @ dv[:10].T
            m = len(pairwise)
            f.update({
                "d_top_minus_corpus": float(d[0]) - mean, "d_zc": (float(d[0]) - mean) / max(std, 1e-6),
                "d1-p99": float(d[0] - np.percentile(corpus, 99)), "d1-d100": float(d[0] - d[-1]),
                "k_matched": len(keyword) / depth,
                "spread10": float((pairwise.sum() - np.trace(pairwise)) / (m * (m - 1))) if m > 1 else 1.0,
                "qcent10": float(query @ dv[:10].mean(0)), "qcent100": float(query @ dv.mean(0)),
                "centnorm10": float(np.linalg.norm(dv[:10].mean(0))), "centnorm100": float(np.linalg.norm(dv.mean(0))),
                "kw_top_cos": float(kv[0] @ query) if len(kv) else 0.0,
                "kw_max_cos": float((kv[:10] @ query).max()) if len(kv) else 0.0,
                **{f"d_ac{k}": _autocorrelation(dv, d[: len(dense)], k) for k in (20, 50, 100)},
                **{f"k_ac{k}": _autocorrelation(kv, kw[: len(keyword)], k) for k in (20, 50, 100)},
                "maxidf": max(idf.values(), default=0.0), "avgidf": float(np.mean(list(idf.values()))) if idf else 0.0,
                "absent": sum(df == 0 for df in dfs.values()) / max(len(dfs), 1),
                "log_terms": math.log1p(len(terms)),
                "wcov_k1": coverage(keyword[0].chunk_id) if keyword else 0.0, "wcov_d1": coverage(dense[0].chunk_id),
                "wcov_dmax10": max(coverage(h.chunk_id) for h in dense[:10]),
            })
            records.append({"dataset": name, "qid": qid, "label": label, "split": split(qid), "f": f,
                            "top10": [[h.chunk_id for h in dense[:10]], [h.chunk_id for h in keyword[:10]]]})
        if number % 100 == 0:
            print(f"[{name}] {number}/{len(queries)} queries, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    engine.close()
    return records


def _df(exact: ExactBM25, term: str, keep: np.ndarray) -> int:
    column = exact.vocab.get(term)
    if column is None:
        return 0
    start, end = exact.tf.indptr[column], exact.tf.indptr[column + 1]
    return int(keep[exact.tf.indices[start:end]].sum())


FAMILIES: dict[str, tuple[str, ...]] = {
    "score distribution, dense": (*(f"d_{m}{k}" for m in ("std", "nqc", "wig", "smv") for k in DEPTHS),
                                  "d_z", "d_zc", "d_top_minus_corpus", "d1-p99", "d1-d100"),
    "score distribution, BM25": (*(f"k_{m}{k}" for m in ("std", "nqc", "wig", "smv") for k in DEPTHS),
                                 "k_z", "k_matched"),
    "scores at ranks 1..100, both sides": tuple(f"{p}@{r}" for p in ("d", "k") for r in RANKS),
    "coherence of the hits' vectors": ("spread10", "qcent10", "qcent100", "centnorm10", "centnorm100",
                                       "kw_top_cos", "kw_max_cos", "d_ac20", "d_ac50", "d_ac100",
                                       "k_ac20", "k_ac50", "k_ac100"),
    "pre-retrieval (IDF, absent terms, length)": ("maxidf", "avgidf", "absent", "log_terms"),
    "IDF-weighted coverage": ("wcov_k1", "wcov_d1", "wcov_dmax10"),
}


def fit_predict(records: list[dict[str, Any]], features: list[str], l2: float = 1.0) -> None:
    """Fit on the training records, write the probability to ``r["new"]`` for every record."""
    train = [r for r in records if r["split"] == "train"]
    x = np.array([[r["f"][k] for k in features] for r in train])
    model = fit_logistic(x, np.array([r["label"] for r in train], dtype=float), l2)
    coef, mean, scale = np.array(model["coef"]), np.array(model["mean"]), np.array(model["scale"])
    for r in records:
        z = model["intercept"] + float(((np.array([r["f"][k] for k in features]) - mean) / scale) @ coef)
        r["new"] = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def forward_selection(records: list[dict[str, Any]], candidates: list[str], steps: int = 6) -> list[str]:
    """Features added to the shipped ones greedily by 5-fold cross-validated AUROC inside the training half."""
    train = [r for r in records if r["split"] == "train"]
    y = np.array([r["label"] for r in train], dtype=float)
    folds = np.array([int(hashlib.md5((r["dataset"] + r["qid"]).encode(), usedforsecurity=False).hexdigest(), 16) % 5 for r in train])
    columns = {k: np.array([r["f"][k] for r in train]) for k in [*SHIPPED, *candidates]}

    def cv(features: list[str]) -> float:
        x = np.column_stack([columns[k] for k in features])
        pred = np.zeros(len(train))
        for fold in range(5):
            fit_on, held = folds != fold, folds == fold
            m = fit_logistic(x[fit_on], y[fit_on])
            pred[held] = m["intercept"] + ((x[held] - m["mean"]) / m["scale"]) @ np.array(m["coef"])
        return auroc(pred, y)

    chosen, best, left = list(SHIPPED), cv(list(SHIPPED)), list(candidates)
    for _ in range(steps):
        score, pick = max((cv([*chosen, c]), c) for c in left)
        if score <= best + 0.002:
            break
        best, chosen = score, [*chosen, pick]
        left.remove(pick)
    return chosen[len(SHIPPED):]


def pairs(records: list[dict[str, Any]]) -> list[dict[int, dict[str, Any]]]:
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["dataset"], r["qid"]), {})[r["label"]] = r
    return list(by.values())


def win_rate(values: list[tuple[float, float]]) -> float:
    """Share of queries whose answerable case scores above its unanswerable case (ties count half)."""
    return float(np.mean([(a > u) + 0.5 * (a == u) for a, u in values])) if values else float("nan")


def conditional_logit(records: list[dict[str, Any]], features: tuple[str, ...], dataset: str) -> float:
    """Held-out within-query win rate of a logistic regression on within-query feature differences."""
    train = pairs([r for r in records if r["split"] == "train"])
    dx = np.array([[p[1]["f"][k] - p[0]["f"][k] for k in features] for p in train])
    scale = dx.std(axis=0)
    scale[scale == 0] = 1.0
    x = np.vstack([dx, -dx]) / scale
    model = fit_logistic(x, np.r_[np.ones(len(dx)), np.zeros(len(dx))])
    w = np.array(model["coef"]) / scale
    test = [p for p in pairs([r for r in records if r["split"] == "test"]) if p[1]["dataset"] == dataset]
    return win_rate([(float(np.array([p[1]["f"][k] for k in features]) @ w),
                      float(np.array([p[0]["f"][k] for k in features]) @ w)) for p in test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_arguments(parser)
    parser.add_argument("--cached", action="store_true", help="Reuse the features of the last run.")
    parser.set_defaults(trials=2000)
    args = parser.parse_args()
    records = [r for name in args.datasets for r in collect_features(name, args.limit, args.cached)]
    scopes = [*args.datasets, "all"]
    every = sorted({k for family in FAMILIES.values() for k in family})
    chosen = forward_selection(records, every)
    arms: list[tuple[str, list[str], float]] = [
        ("shipped features, refitted", list(SHIPPED), 1.0),
        *[(f"+ {family}", [*SHIPPED, *features], 1.0) for family, features in FAMILIES.items()],
        (f"+ forward selection ({', '.join(chosen) or 'none'})", [*SHIPPED, *chosen], 1.0),
        *[(f"+ all {len(every)} candidates, ridge {l2:g}", [*SHIPPED, *every], l2) for l2 in (1.0, 10.0, 100.0)],
    ]
    results: dict[str, Any] = {"trials": args.trials, "limit": args.limit, "forward_selection": chosen, "arms": []}
    rows = []
    for label, features, l2 in arms:
        fit_predict(records, features, l2)
        arm: dict[str, Any] = {"arm": label, "features": features, "l2": l2}
        row: list[Any] = [label]
        for scope in scopes:
            held = [r for r in records if r["split"] == "test" and scope in ("all", r["dataset"])]
            train = [r for r in records if r["split"] == "train" and scope in ("all", r["dataset"])]
            ours = auroc(np.array([r["new"] for r in held]), np.array([r["label"] for r in held]))
            fitted = auroc(np.array([r["new"] for r in train]), np.array([r["label"] for r in train]))
            test = bootstrap(held, "new", "shipped", args.trials)
            arm[scope] = {"auroc_train": fitted, "auroc_held_out": ours, "diff_ci": test["diff_ci"], "p": test["p"]}
            row += [fitted, ours, f"[{test['diff_ci'][0]:+.3f}, {test['diff_ci'][1]:+.3f}]", f"{test['p']:.3f}"]
        results["arms"].append(arm)
        rows.append(row)
    headers = ["model"]
    for scope in scopes:
        headers += [f"{scope} train", f"{scope} held-out", "diff vs shipped (95 % CI)", "p"]
    print(table(headers, rows))
    for r in records:
        r["new"] = r["shipped"]
    single = []
    test_records = [r for r in records if r["split"] == "test"]
    y = np.array([r["label"] for r in test_records])
    for k in [*SHIPPED, *every]:
        single.append((auroc(np.array([r["f"][k] for r in test_records]), y), k))
    results["single_feature_held_out_auroc"] = {k: a for a, k in sorted(single, reverse=True)}
    diagnostics = {}
    for scope in args.datasets:
        ps = [p for p in pairs(records) if p[1]["dataset"] == scope]
        held = [p for p in pairs([r for r in records if r["split"] == "test"]) if p[1]["dataset"] == scope]
        diagnostics[scope] = {
            "queries": len(ps),
            "top10_unchanged": float(np.mean([p[1]["top10"] == p[0]["top10"] for p in ps])),
            "dense_top1_unchanged": float(np.mean([p[1]["top10"][0][:1] == p[0]["top10"][0][:1] for p in ps])),
            "within_query_win_rate_shipped": win_rate([(p[1]["shipped"], p[0]["shipped"]) for p in held]),
            "within_query_win_rate_conditional_logit_shipped_features": conditional_logit(records, SHIPPED, scope),
            # The dense side alone: the removal leaves every remaining chunk's cosine as it was, so no shift of
            # BM25 statistics (document frequencies move when documents go) can help this one.
            "within_query_win_rate_conditional_logit_dense_top_gap": conditional_logit(
                records, ("dense_top", "dense_gap"), scope),
        }
    results["diagnostics"] = diagnostics
    print()
    print(table(["dataset", "queries", "top-10 lists unchanged by the removal", "dense top hit unchanged",
                 "within-query win rate, shipped model (held-out)", "same, conditional logit on shipped features",
                 "same, conditional logit on dense top and gap"],
                [[s, d["queries"], d["top10_unchanged"], d["dense_top1_unchanged"], d["within_query_win_rate_shipped"],
                  d["within_query_win_rate_conditional_logit_shipped_features"],
                  d["within_query_win_rate_conditional_logit_dense_top_gap"]] for s, d in diagnostics.items()]))
    best = sorted(single, reverse=True)[:8]
    print("\nbest single features, held-out AUROC over the datasets run: " + ", ".join(f"{k} {a:.3f}" for a, k in best))
    path = write_result("answerable_qpp", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
