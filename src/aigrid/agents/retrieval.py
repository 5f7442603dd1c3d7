"""retrieve: search the documents of the site the loop runs at (see vector_store.py for residency)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.agents.embeddings import for_tenant
from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.agents.vector_store import SiteStores
from aigrid.security.firewall.texts import Source

MAX_K = 5
SNIPPET_CHARS = 600


class Retrieve:
    name = "retrieve"
    source = Source.DOCUMENT
    description = ("Search this site's documents for passages relevant to a query; returns the best "
                   "passages with their source and similarity.")
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 300},
                       "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}},
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(self, stores: SiteStores) -> None:
        self.stores = stores

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        query = require_str(arguments, "query", max_len=1_000)
        k = arguments.get("k", 3)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ToolError(f"k must be an integer from 1 to {MAX_K}")
        if context.site_id is None:
            raise ToolError("retrieval runs only at a site")
        store = self.stores.get(context.site_id)
        # one answer whether the site holds no documents or only other tenants': "none visible to this tenant" told
        # a tenant that another keeps private documents at the site
        nothing = f"no documents are stored at site {context.site_id}"
        if store is None or len(store) == 0:
            return nothing
        with for_tenant(context.tenant):  # on the tenant's turns of the process's one embedder
            vectors, _ = await self.stores.embedder.embed([query])
        hits = store.search(vectors[0], k, context.tenant)
        if not hits:
            return nothing
        return "\n".join(f"[{i}] ({h.document.source}, similarity {h.score:.2f}) {h.document.text[:SNIPPET_CHARS]}"
                         for i, h in enumerate(hits, 1))
