"""Retrieval metrics over ranked document ids and graded relevance judgments (BEIR/TREC style)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain ``rel / log2(rank + 1)``, as pytrec_eval computes it for BEIR.

    Args:
        ranked: document ids, best first (duplicates should be removed by the caller).
        relevant: graded judgments, ``doc id -> grade``; grades <= 0 count as not relevant.
        k: cut-off.

    Returns:
        A value in [0, 1]; 0 when nothing is relevant.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    dcg = sum(max(relevant.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents (grade > 0) found in the first ``k``; 0 when none is relevant."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    return len(set(ranked[:k]) & wanted) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within ``k``; 0 if there is none."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0
