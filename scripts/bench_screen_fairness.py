"""How long one tenant's request waits for the firewall while another tenant floods it with large documents.

    .venv/bin/python scripts/bench_screen_fairness.py [--bulk N] [--bulk-kib K]

Tenant "bulk" sends N documents of K KiB at once (each read by the document head on the firewall's one
worker thread, about 1.7 s of CPU per MiB); 20 ms later tenant "rag" sends one 3,000-character document.
Prints how long "rag" waited for its verdict and how long the bulk jobs took (wall time; the real firewall
through `Screen`, the gateway's choke point). Prints figures, no pass/fail: docs/security.md ("Cost") quotes
them. Run it against an older checkout with PYTHONPATH=that/src to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Firewall
from aigrid.security.firewall.screen import Screen
from aigrid.security.firewall.texts import ModelText, Source

PARAGRAPH = ("Minutes of the planning meeting. The team reviewed the delivery schedule for the third quarter, "
             "agreed on the budget for the new warehouse and asked finance to prepare the usual report. ")


def document(chars: int, n: int = 0) -> list[ModelText]:
    text = (f"Document {n}. " + PARAGRAPH * (chars // len(PARAGRAPH) + 1))[:chars]  # each its own: none cached
    return [ModelText(text, Source.DOCUMENT, ("documents", 0))]


async def run(bulk: int, bulk_chars: int) -> None:
    screen = Screen(Firewall(InjectionModel.load()))
    try:
        t0 = time.perf_counter()
        jobs = [asyncio.create_task(screen.check("bulk", document(bulk_chars, i))) for i in range(bulk)]
        await asyncio.sleep(0.02)
        t1 = time.perf_counter()
        await screen.check("rag", document(3_000))
        rag = time.perf_counter() - t1
        await asyncio.gather(*jobs)
        total = time.perf_counter() - t0
    finally:
        screen.close()
    print(f"bulk: {bulk} documents of {bulk_chars // 1024} KiB, all read in {total:.2f} s")
    print(f"rag:  one 3,000-character document, verdict after {rag * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk", type=int, default=4, help="documents the bulk tenant sends (default 4)")
    parser.add_argument("--bulk-kib", type=int, default=512, help="size of each, KiB (default 512)")
    args = parser.parse_args()
    asyncio.run(run(args.bulk, args.bulk_kib * 1024))


if __name__ == "__main__":
    main()
