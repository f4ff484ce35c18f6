"""stores stage of rag-platform."""
