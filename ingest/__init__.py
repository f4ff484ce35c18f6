"""ingest stage of rag-platform."""
