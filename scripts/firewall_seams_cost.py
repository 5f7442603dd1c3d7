"""What reading short user turns together (`Firewall._seams`) costs a request: `check_texts` on a one-turn chat and
on a two-turn chat of short user turns, with and without the joint reading, no score cache (each new turn of a
conversation is a miss: its joined window is new). CPU time of this process. docs/security.md (the prompt head's
"read together") quotes it. Usage:
    .venv/bin/python scripts/firewall_seams_cost.py [CALLS]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Firewall
from aigrid.security.firewall.texts import ModelText, Source

ONE = [ModelText("You are a helpful assistant.", Source.SYSTEM, ("messages", 0, "content")),
       ModelText("What is the capital of France?", Source.USER, ("messages", 1, "content"))]
TWO = [*ONE, ModelText("Paris.", Source.ASSISTANT, ("messages", 2, "content")),
       ModelText("And of Spain?", Source.USER, ("messages", 3, "content"))]


def _us(firewall: Firewall, texts: Sequence[ModelText], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        firewall.check_texts("t", texts)
    return (time.process_time() - start) * 1e6 / calls


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    model = InjectionModel.load()
    for name, texts in (("one user turn", ONE), ("two short user turns", TWO)):
        firewall = Firewall(model, cache_size=0)
        _us(firewall, texts, calls // 10)  # warm up
        joint = _us(firewall, texts, calls)
        firewall._seams = lambda *_, **__: None  # type: ignore[method-assign]
        alone = _us(firewall, texts, calls)
        print(f"{name}: {joint:.0f} us a check_texts, {alone:.0f} us without the joint reading")


if __name__ == "__main__":
    main()
