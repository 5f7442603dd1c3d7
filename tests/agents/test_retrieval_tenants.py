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


class _Walked(list):  # type: ignore[type-arg]
    """A list that counts the walks over it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).walks += 1
        return super().__iter__()


def test_a_search_does_not_walk_every_document_in_python() -> None:
    """Each search walked every document in Python to find the asker's (about 5 ms of the event loop per 20,000
    chunks, for each `retrieve` any tenant's model asked for); the visible rows are picked in numpy now, and the
    tenants still see what they saw."""
    n = 3_000
    docs = [Document(f"d{i}", "s", None if i % 3 == 0 else ("acme" if i % 3 == 1 else "globex")) for i in range(n)]
    vectors = np.zeros((n, 2), np.float32)
    vectors[:, 0] = np.linspace(0.0, 1.0, n)
    vectors[:, 1] = 1.0
    store = VectorStore(2)
    store.add(docs, vectors)
    store.documents = _Walked(store.documents)
    query = np.array([1.0, 0.0], np.float32)
    seen = {t: [h.document for h in store.search(query, k=5, tenant=t)] for t in ("acme", "globex", None, "nobody")}
    assert _Walked.walks == 0
    assert [d.text for d in seen["acme"]] == ["d2998", "d2997", "d2995", "d2994", "d2992"]
    assert [d.text for d in seen["globex"]] == ["d2999", "d2997", "d2996", "d2994", "d2993"]
    assert [d.text for d in seen[None]] == [d.text for d in seen["nobody"]] == ["d2997", "d2994", "d2991", "d2988",
                                                                                 "d2985"]
