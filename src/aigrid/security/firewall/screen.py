"""The choke point: every text a model will read passes through `Screen.check` before it reaches an engine.

    texts = [ModelText(text, Source.USER, ("messages", 0, "content")), ...]   # or a tool's result
    screened = await screen.check(tenant, texts)
    screened.raise_if_blocked()      # request texts: 400 firewall_blocked naming the field
    ... forward screened.texts (PII redacted where the tenant's policy says)

Callers: the chat and completion routes (gateway/model_texts.py turns each request shape into texts), the
agent loop for every server-side tool, MCP, retrieval and web result (agents/loop.py), and any new front
door. Cost: scoring is pure Python (about 1 ms per 1,000 characters); inputs up to `inline_chars` are
scored in place (well under a millisecond), larger ones on one worker thread, so the event loop keeps
serving other requests while a 4 MiB body is read (the thread gives the interpreter back every switch
interval). One worker: big inputs queue behind each other instead of multiplying the contention. With the
document cascade on (cascade.py), every text its transformer may read (documents, tool results, pasted parts)
goes to that worker whatever its size; with the prompt cascade on, every prompt of its grey zone (the n-gram
prompt head reads a short prompt here first to know).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from aigrid.security.firewall.pipeline import Firewall, Screened
from aigrid.security.firewall.texts import ModelText

INLINE_CHARS = 2_000


class Screen:
    def __init__(self, firewall: Firewall, *, inline_chars: int = INLINE_CHARS) -> None:
        self.firewall = firewall
        self.inline_chars = inline_chars
        self._pool: ThreadPoolExecutor | None = None  # threads start on first use, not here

    async def check(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
        if sum(len(t.text) for t in texts) <= self.inline_chars and not self.firewall.reads_slowly(tenant, texts):
            return self.firewall.check_texts(tenant, texts)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigrid-firewall")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.firewall.check_texts, tenant, list(texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
