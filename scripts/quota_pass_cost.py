"""The in-process quota backend's cost per request once its table holds more live counters than `max_counters`
(docs/security.md's twentieth-session row on `MemoryQuotaBackend._next_pass`, docs/reliability.md's bounds table).

Fills a backend with 100,000 live day budgets (one a JWT user), then times admissions (a consume and its settling
adjust, each a new user) as the code is now (the first admission crosses the bound: its one pass is included), and "before": the pass over the whole table on every call, as the code
did until 2026-12-05 (reproduced by holding `_next_pass` at the bound). Usage:
    .venv/bin/python scripts/quota_pass_cost.py [REQUESTS]
"""

from __future__ import annotations

import asyncio
import sys
import time

from aigrid.security.quota_backend import Counter, MemoryQuotaBackend

DAY = 86_400.0
BOUND = 100_000


def _budget(user: int, amount: int = 10) -> Counter:
    return Counter(f"q:{{t}}:key:jwt:user{user}:budget:0", amount, 1_000, DAY, DAY)


async def _ms_per_request(every_call: bool, requests: int) -> float:
    backend = MemoryQuotaBackend(max_counters=BOUND)
    for user in range(BOUND):
        await backend.consume([_budget(user)])
    start = time.perf_counter()
    for user in range(BOUND, BOUND + requests):
        if every_call:
            backend._next_pass = BOUND
        await backend.consume([_budget(user)])
        if every_call:
            backend._next_pass = BOUND
        await backend.adjust([_budget(user, -5)])
    return (time.perf_counter() - start) * 1e3 / requests


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    for name, every_call in (("before (a pass on every call)", True), ("now", False)):
        ms = asyncio.run(_ms_per_request(every_call, requests))
        print(f"{name}: {ms:.2f} ms per request (consume + adjust), {requests} requests past {BOUND:,} live counters")


if __name__ == "__main__":
    main()
