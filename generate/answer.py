"""What generation returns: the answer text and the citations that tie it to retrieved chunks.

The types live in :mod:`rag.core.answers` (shared result types every layer may import); this module
keeps the import path ``rag.generate.answer`` working for existing code.
"""

from rag.core.answers import CITATION_MARKER, Answer, AnswerError, Citation, find_citations, numbered_hits

__all__ = ["CITATION_MARKER", "Answer", "AnswerError", "Citation", "find_citations", "numbered_hits"]
