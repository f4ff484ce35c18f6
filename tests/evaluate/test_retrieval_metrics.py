"""Retrieval metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rag.evaluate.retrieval_metrics import mrr_at, ndcg_at, recall_at

QRELS = {"a": 2, "b": 1, "c": 1, "z": 0}


def test_ndcg_hand_computed() -> None:
    ranked = ["x", "a", "c"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(ranked, QRELS, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b", "c"], QRELS, 3) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], QRELS, 1) == pytest.approx(1 / 2)  # ideal at k=1 is the grade-2 document
    assert ndcg_at(["x"], {}, 10) == 0.0 and ndcg_at(["z"], QRELS, 10) == 0.0


def test_recall_and_mrr() -> None:
    assert recall_at(["a", "x", "b", "z"], QRELS, 100) == pytest.approx(2 / 3)
    assert recall_at(["a", "x", "b"], QRELS, 1) == pytest.approx(1 / 3)
    assert recall_at(["a"], {}, 10) == 0.0
    assert mrr_at(["x", "z", "c"], QRELS) == pytest.approx(1 / 3) and mrr_at(["x"], QRELS) == 0.0
    with pytest.raises(ValueError, match="k must be positive"):
        ndcg_at(["a"], QRELS, 0)
