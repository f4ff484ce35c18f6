"""Format parsers: the :class:`Parser` protocol, the registry that picks one per file, and the helpers
parsers share (:class:`DocumentBuilder` for text and tables, :func:`decode_text` for encodings).

See ``docs/ingestion.md`` for the formats and how to write a parser plugin.
"""

from rag.ingest.parsers.base import BaseParser, ParseContext, ParseLimits, Parser
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.encoding import decode_text
from rag.ingest.parsers.registry import ENTRY_POINT_GROUP, FormatInfo, ParserRegistry

__all__ = [
    "ENTRY_POINT_GROUP", "BaseParser", "DocumentBuilder", "FormatInfo", "ParseContext", "ParseLimits", "Parser",
    "ParserRegistry", "decode_text",
]
