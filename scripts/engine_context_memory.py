"""RSS of one embedded llama-server (SmolLM2-135M, 2 slots) at each per-slot context given, after its start and
after one chat of about 830 tokens (docs/engines.md, "The context an embedded engine holds").

    .venv/bin/python scripts/engine_context_memory.py 2048 4096 8192
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from aigrid.bench.procs import rss_kib
from aigrid.engines.llama_server import LlamaServerProcess, embedded_config

SLOTS = 2


def rss_mib(pid: int) -> float:
    """The engine's own VmRSS (aigrid.bench.procs.rss_kib), in MiB; 0 when it is gone."""
    return (rss_kib(pid) or 0) / 1024


async def main(contexts: list[int]) -> None:
    logs = Path(tempfile.mkdtemp(prefix="aigrid-context-"))
    for context in contexts:
        cfg = embedded_config(logs / f"engine-{context}.log", context=context, slots=SLOTS)
        async with LlamaServerProcess(cfg) as engine:
            assert engine.pid is not None
            started = rss_mib(engine.pid)
            async with httpx.AsyncClient(timeout=300) as client:
                r = await client.post(engine.base_url + "/v1/chat/completions", json={
                    "model": cfg.alias, "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Name a river. " * 200}]})
                r.raise_for_status()
            print(f"context {context} a slot x {SLOTS} slots (--ctx-size {context * SLOTS}): RSS {started:.0f} MiB "
                  f"started, {rss_mib(engine.pid):.0f} MiB after a {r.json()['usage']['prompt_tokens']}-token chat",
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [2048, 4096, 8192]))
