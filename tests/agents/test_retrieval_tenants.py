"""Retrieval shows a tenant only its own and the site's public documents, and says nothing of the others'
(helper 132, 5 Dec 2026)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aigrid.agents import SiteStores, ToolContext
from aigrid.agents.retrieval import Retrieve
from aigrid.agents.vector_store import Document, VectorStore


class _Fixed:
    """An embedder whose every vector is `vector`."""

    model = "fixed"
    dimensions = 2

    def __init__(self, vector: Sequence[float]) -> None:
        self.vector = np.array(vector, np.float32)

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return np.tile(self.vector, (len(texts), 1)), len(texts)


def test_a_query_whose_scores_are_nan_ranks_no_hidden_document() -> None:
    store = VectorStore(2)
    store.add([Document("public", "p"), Document("acme's secret", "s", "acme")],
              np.array([[1, 0], [0, 1]], np.float32))
    hits = store.search(np.array([np.nan, np.nan]), k=5, tenant="globex")
    # before: the hidden document scored -inf, which sorts before NaN: it came first
    assert [h.document.text for h in hits] == ["public"]
    assert [h.document.text for h in store.search(np.array([0.0, 1.0]), k=1, tenant="globex")] == ["public"]
    assert [h.document.text for h in store.search(np.array([0.0, 1.0]), k=1, tenant="acme")] == ["acme's secret"]


async def test_a_site_holding_only_other_tenants_documents_answers_as_one_holding_none() -> None:
    stores = SiteStores(_Fixed([1.0, 0.0]))
    await stores.load("fra", [("acme.md", "ACME's negotiated discount is 12 percent.")], tenant="acme")
    tool = Retrieve(stores)
    empty = await tool.run({"query": "discount"}, ToolContext("gru", "globex"))
    assert empty == "no documents are stored at site gru"
    assert await tool.run({"query": "discount"}, ToolContext("fra", "globex")) == "no documents are stored at site fra"
    assert "acme.md" in await tool.run({"query": "discount"}, ToolContext("fra", "acme"))
