"""generate stage of rag-platform."""
