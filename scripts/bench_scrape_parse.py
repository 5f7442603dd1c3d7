"""What one engine-metrics scrape's parse costs (engines/prometheus.py), for each shipped /metrics text and the
emulator's.

    PYTHONPATH=src .venv/bin/python scripts/bench_scrape_parse.py [N]

For each text in tests/engines/data and the emulator's exposition (EmulatedEngine.prometheus, what the bench harness
scrapes; 2 requests' histograms filled): its kind's parser (parse_stats) as shipped, and beside it the same reader
of the whole text, every series but the buckets parsed (collect_samples without a kind's READS, what the parsers
did until the thirty-first session). Prints the best of 7 runs of N parses (the two alternating), in microseconds a scrape, and asserts
that both give the same EngineStats."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from _bestof import best_us

from aigrid.engines import prometheus
from aigrid.engines.emulator_model import EmulatedEngine, EmulatorConfig
from aigrid.engines.prometheus import Samples
from aigrid.engines.protocol import EngineStats

DATA = Path(__file__).resolve().parent.parent / "tests" / "engines" / "data"
READERS: dict[str, Callable[[Samples], EngineStats]] = {
    "vllm": prometheus._read_vllm, "sglang": prometheus._read_sglang, "llamacpp": prometheus._read_llamacpp,
    "tgi": prometheus._read_tgi, "dcgm": prometheus._read_dcgm,
}
"""Each kind's reader of the samples, given every series of the whole text (as before) instead of its READS."""


def alternating_best_us(calls: tuple[Callable[[], object], ...], n: int) -> list[float]:
    """Each call's best of 7 runs of n (_bestof.best_us, one run at a time), the calls' runs alternating (the
    machine's load moves under them)."""
    best = [float("inf")] * len(calls)
    for _ in range(7):
        for i, call in enumerate(calls):
            best[i] = min(best[i], best_us(call, n, 1))
    return best


def emulator_text() -> str:
    loop = asyncio.new_event_loop()
    try:
        engine = EmulatedEngine(EmulatorConfig(), loop=loop)
        for hist in (engine.ttft, engine.itl, engine.e2e):
            hist.observe(0.05)
            hist.observe(0.3)
        return engine.prometheus().decode()
    finally:
        loop.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    texts = [("emulator (vllm)", "vllm", emulator_text())]
    texts += [(p.name, p.name.split("_")[0], p.read_text()) for p in sorted(DATA.glob("*.prom"))]
    print(f"{n} parses a text, best of 7 (whole text and READS alternating), us a scrape")
    print(f"  {'text':24} {'kind':9} {'whole text':>10} {'its READS':>10}")
    for name, kind, text in texts:
        reader = READERS[kind]

        def whole(reader: Callable[[Samples], EngineStats] = reader, text: str = text) -> EngineStats:
            return reader(prometheus.collect_samples(text))

        def reads(kind: str = kind, text: str = text) -> EngineStats:
            return prometheus.parse_stats(kind, text)

        assert whole() == reads(), (name, whole(), reads())
        old_us, new_us = alternating_best_us((whole, reads), n)
        print(f"  {name:24} {kind:9} {old_us:10.1f} {new_us:10.1f}")


if __name__ == "__main__":
    main()
