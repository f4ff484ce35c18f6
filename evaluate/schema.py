"""The version of the files a ``rag eval run`` writes (``results.json``, ``samples.jsonl``).

Its own module because both the run (:mod:`rag.evaluate.run`) and its reports
(:mod:`rag.evaluate.report`), which the run imports, stamp it, and :mod:`rag.evaluate.compare` refuses a
run written by a newer version; kept in either of them it tied the two into an import cycle.
"""

SCHEMA_VERSION = 1
"""Raised when a field of ``results.json`` or ``samples.jsonl`` changes meaning or goes away."""
