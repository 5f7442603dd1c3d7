"""sim/shared_state.py: the simulated gateways' book of pending prompts (SyncedPrefillBook) shows each gateway
exactly what the live gateways' books and exchanges would (telemetry/prefill_book.py): its own prompts and
first tokens at once, the others' as of the last exchange."""

from __future__ import annotations

import random

from aigrid.sim.shared_state import SyncedPrefillBook
from aigrid.telemetry.prefill_book import PrefillBook, Report, latest, merge_reports, queue_of


def test_synced_book_equals_live_books_exchanged_by_copy() -> None:
    rng = random.Random(7)
    gateways, endpoints = 3, 4
    synced = SyncedPrefillBook(endpoints)
    books = [PrefillBook() for _ in range(gateways)]
    shared: list[Report] = [{} for _ in range(gateways)]  # each gateway's report at the last exchange
    pending: list[tuple[int, int, int, float]] = []  # (gateway, endpoint, request, arrival)
    now = 0.0
    for rid in range(4000):
        now += rng.uniform(0.0005, 0.004)
        op = rng.random()
        if op < 0.45 or not pending:
            g, k, arrives = rng.randrange(gateways), rng.randrange(endpoints), now + rng.uniform(0.0, 0.1)
            tokens = rng.randrange(1, 4000)
            synced.sent(k, rid, g, now, arrives, tokens)
            books[g].sent(k, rid, arrives, tokens)
            pending.append((g, k, rid, arrives))
        elif op < 0.75:
            g, k, r, arrives = pending.pop(rng.randrange(len(pending)))
            produced = now - rng.uniform(0.0, 0.05)
            synced.first_token(k, r, g, now, produced)
            books[g].first_token(k, r, produced)
        elif op < 0.9:
            g, k, r, _ = pending.pop(rng.randrange(len(pending)))
            synced.drop(k, r, now)
            books[g].drop(k, r)
        else:
            synced.exchange(now)
            shared = [book.report(now) for book in books]
        for g in range(gateways):
            others = merge_reports(shared[o] for o in range(gateways) if o != g)
            for k in range(endpoints):
                theirs = others.get(str(k), (None, ()))
                want = queue_of(latest(books[g].anchor(k), theirs[0]), (*books[g].arrivals(k), *theirs[1]), now)
                assert synced.queue(k, g, now) == want, (rid, g, k)
