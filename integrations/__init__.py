"""Adapters that hand rag-platform's retrieval to other frameworks (LangChain, LlamaIndex).

Each adapter is an optional extra (``pip install 'rag-platform[langchain]'`` or ``[llamaindex]``) and works
over the local library or over a running ``rag serve``.
"""
