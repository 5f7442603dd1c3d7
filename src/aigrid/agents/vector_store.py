"""Per-site document stores for retrieval: exact cosine search over unit vectors with numpy.

Why brute force and not an index (sqlite-vec, usearch, LanceDB): a site's corpus is small (its own
manuals, policies, catalogue: thousands to tens of thousands of chunks), and at 384 dimensions one
matrix-vector product over 20,000 chunks takes about a millisecond on one core, exact, with nothing to
build, tune or rebuild on insert and no native extension to ship. An approximate index pays off past about
a million chunks per site; the store's interface (add, search) is what an HNSW store (usearch) would
implement then.

Residency: stores are keyed by site and a tenant's documents carry the tenant's name; retrieval reads only
the store of the site the loop runs at (which the routing core already restricted to the tenant's allowed
jurisdictions), and only documents that are public at that site or belong to the asking tenant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigrid.agents.embeddings import Embedder, Vectors

CHUNK_CHARS = 800


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    source: str
    tenant: str | None = None
    """None: visible to every tenant served at the site; else only to this tenant."""


@dataclass(frozen=True, slots=True)
class Hit:
    score: float
    document: Document


def chunk_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs packed into chunks of at most max_chars (a longer paragraph is cut at spaces)."""
    chunks: list[str] = []
    current = ""
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        while len(para) > max_chars:
            cut = para.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(para[:cut].strip())
            para = para[cut:].strip()
        if current and len(current) + 2 + len(para) > max_chars:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def read_documents(paths: Iterable[Path], max_bytes: int = 5_000_000) -> list[tuple[str, str]]:
    """(source, text) of each UTF-8 text file (for SiteStores.load); OSError propagates to the caller,
    which knows which spec field named the file."""
    out = []
    for path in paths:
        data = path.read_bytes()[:max_bytes]
        out.append((path.name, data.decode("utf-8", errors="replace")))
    return out


class VectorStore:
    """Documents and their unit vectors, searched by cosine similarity (a dot product)."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.documents: list[Document] = []
        self._vectors: Vectors = np.zeros((0, dimensions), np.float32)
        self._owners: dict[str, int] = {}
        """A tenant owning documents here -> its number (from 1) in `_owner`."""
        self._owner = np.zeros(0, np.int32)
        """Each document's owner's number, 0 for a public one: a search picks the visible rows in numpy, where a
        Python walk over every document cost each `retrieve` about 5 ms of the event loop per 20,000 chunks."""

    def __len__(self) -> int:
        return len(self.documents)

    def add(self, documents: Sequence[Document], vectors: Vectors) -> None:
        if vectors.shape != (len(documents), self.dimensions):
            raise ValueError(f"expected {len(documents)} vectors of {self.dimensions} dimensions, "
                             f"got {vectors.shape}")
        owners = [0 if d.tenant is None else self._owners.setdefault(d.tenant, len(self._owners) + 1)
                  for d in documents]
        self.documents.extend(documents)
        self._vectors = np.vstack([self._vectors, vectors.astype(np.float32)])
        self._owner = np.concatenate([self._owner, np.array(owners, np.int32)])

    def search(self, query: Vectors, k: int = 3, tenant: str | None = None) -> list[Hit]:
        if not self.documents:
            return []
        # only the visible documents are ranked: another tenant's were ranked too, at a score of -inf, and a query
        # whose scores are NaN (an embedder's overflow) sorts after -inf, so its top k were the hidden ones
        own = None if tenant is None else self._owners.get(tenant)
        visible = np.flatnonzero(self._owner == 0 if own is None else (self._owner == 0) | (self._owner == own))
        k = min(k, len(visible))
        if k <= 0:
            return []
        scores = (self._vectors @ query.astype(np.float32).reshape(-1))[visible]
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [Hit(float(scores[i]), self.documents[visible[i]]) for i in top]


class SiteStores:
    """site id -> VectorStore, filled from each site's documents with one embedder."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._stores: dict[str, VectorStore] = {}

    def get(self, site_id: str) -> VectorStore | None:
        return self._stores.get(site_id)

    def sites(self) -> list[str]:
        return sorted(self._stores)

    async def load(self, site_id: str, texts: Iterable[tuple[str, str]], tenant: str | None = None) -> int:
        """Chunk, embed and store (source, text) pairs at `site_id`; returns the number of chunks."""
        docs = [Document(chunk, source, tenant) for source, text in texts for chunk in chunk_text(text)]
        if not docs:
            return 0
        vectors, _ = await self.embedder.embed([d.text for d in docs])
        store = self._stores.setdefault(site_id, VectorStore(self.embedder.dimensions))
        store.add(docs, vectors)
        return len(docs)

    def counts(self) -> Mapping[str, int]:
        return {site: len(store) for site, store in self._stores.items()}
