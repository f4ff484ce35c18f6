"""retrieve stage of rag-platform."""
