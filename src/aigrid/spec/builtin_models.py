"""Models every gateway serves itself, whatever the spec says: spec check matches a tenant's `models` patterns
against them (spec/models.py), and the gateway's embedder answers to them (agents/embeddings.py). Here, in the
spec layer, so that spec reads them without importing gateway or agent code."""

from __future__ import annotations

EMBEDDING_MODEL = "all-minilm-l6-v2"
"""The embedding model behind /v1/embeddings and retrieval."""
EMBEDDING_ALIASES = frozenset({EMBEDDING_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
"""Every name a request may give it (the model's own id included)."""
