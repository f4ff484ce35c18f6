"""evaluate stage: ``rag eval`` (RAGAS judge metrics, retrieval metrics, reports, comparisons, sweeps).

- :mod:`~rag.evaluate.testset`: JSONL/CSV question sets and BEIR folders;
- :mod:`~rag.evaluate.judge`: the RAGAS judge behind any OpenAI-compatible endpoint, cached on disk;
- :mod:`~rag.evaluate.metrics`: judge and retrieval metrics, each a score or a reason why not;
- :mod:`~rag.evaluate.run`: one resumable run; :mod:`~rag.evaluate.report`: its reports;
- :mod:`~rag.evaluate.compare` and :mod:`~rag.evaluate.sweep`: run-to-run comparisons and grids;
- :mod:`~rag.evaluate.retrieval_metrics` and :mod:`~rag.evaluate.significance`: the numbers underneath.
"""
