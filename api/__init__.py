"""api stage of rag-platform."""
