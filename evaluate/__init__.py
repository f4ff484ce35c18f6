"""evaluate stage of rag-platform."""
