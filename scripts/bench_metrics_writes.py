"""What a request's close pays for its GenAI metrics (GatewayMetrics.genai) through the gateway's guarded writer.

    PYTHONPATH=src .venv/bin/python scripts/bench_metrics_writes.py [CALLS]

Until the thirty-first session the close wrapped the whole of genai() in one guarded call (observe.MetricsWrites:
`written(route, lambda: observe(ex, metrics))`); now each series is its own guarded write (genai's `written`). The
script times whichever the source it imports has (it reads genai's signature), so run it on two trees to compare
them: a streamed answer (6 writes: duration, time to first token, input and output tokens, time per output token by
model and by site) and a whole one (3 writes), both on a label set already created. Beside them, for scale: one bare
counter inc() and one through the guarded writer. Prints the best of 7 runs of CALLS calls, in microseconds a call."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

from _bestof import best_us

from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.observe import MetricsWrites

ROUTE = "/v1/chat/completions"
USAGE = {"prompt_tokens": 120, "completion_tokens": 64, "total_tokens": 184}


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    metrics, written = GatewayMetrics(), MetricsWrites()
    per_write = "written" in inspect.signature(metrics.genai).parameters

    def close(ttft: float | None) -> Callable[[], None]:
        site = "s0" if ttft is not None else None
        if per_write:
            return lambda: metrics.genai("chat", "model", 1.2, ttft, USAGE, "", site, written=written, what=ROUTE)
        return lambda: written(ROUTE, lambda: metrics.genai("chat", "model", 1.2, ttft, USAGE, "", site))

    print(f"genai's writes: {'each guarded' if per_write else 'one guarded call'}; {calls} calls, best of 7")
    for name, call in (("streamed (6 writes)", close(0.2)), ("whole (3 writes)", close(None)),
                       ("one bare inc()", metrics.hedges.inc),
                       ("one inc() through written", lambda: written(ROUTE, metrics.hedges.inc))):
        call()  # its label sets created
        print(f"  {name:28} {best_us(call, calls, 7):6.2f} us")
    assert written.failed == 0


if __name__ == "__main__":
    main()
