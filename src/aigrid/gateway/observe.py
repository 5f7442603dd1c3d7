"""The end of one audited request in the observability signals: its span ends (tracing.py) with the usage,
the outcome and the error, and the GenAI metrics (metrics.py) count it. Called once, from the `finally`
that closes the Exchange (routes.Audited), each of its writes through `written`: a metrics write never stops a
request's settlement, nor another write."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aigrid.audit.record import is_error
from aigrid.gateway.decisions import first_token_ms
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.tracing import OPERATIONS

log = logging.getLogger("aigrid.gateway")

WARN_EVERY = 1000
"""A metrics write that fails is one WARNING for its first failure and for each WARN_EVERY-th after it."""


class MetricsWrites:
    """The request's metrics writes that may fail (a prometheus multiprocess file that cannot grow on a full disk:
    an OSError from mmap; a span exporter's bug): each failure counted and logged (rate-limited), never the
    request's. routes.close_exchange writes through it before and after settling (Guard.finish), proxy.Proxy when
    it books an answer: the quota settled, the audit record written, the in-flight count released whatever they do.
    One per Gateway (its proxy's `written`); no cost per chunk: one try per call. Also called off the event loop (the
    firewall screen's hooks, on its worker thread: app.build_gateway): a failure is counted under a lock."""

    def __init__(self) -> None:
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, what: str, write: Callable[..., None], *args: Any) -> None:
        """`write(*args)`, logged (`what`: the route or endpoint it was for) when it fails."""
        try:
            write(*args)
        except Exception as e:  # noqa: BLE001 - metrics are told, never the request's failure (logged below)
            with self._lock:  # the screen's worker thread and the event loop may fail at once
                self.failed += 1
                failed = self.failed
            if failed % WARN_EVERY == 1 or WARN_EVERY == 1:
                log.warning("the metrics of %s were not written (%d failed writes so far): %r", what, failed, e)


def observe(ex: Exchange, metrics: GatewayMetrics, written: MetricsWrites) -> None:
    """The span's end and each GenAI series, every one its own call through `written`: one that fails (a span
    exporter's bug, a metrics file that cannot grow) skips none of the others (until the thirty-first session the span
    and the series were one call, the first failure skipping the rest of the request's)."""
    usage, outcome = ex.final_usage(), ex.final_outcome()
    written(ex.route, ex.trace.end, ex.record, usage, ex.failure(), outcome)
    # only requests whose model the grid knows (a decision was made, the embedder answered, or a client that
    # hung up after its request was checked, model included: it has a ticket): the model label never takes a
    # value a client made up
    if ex.record is None and not (outcome == "ok" and ex.usage is not None) \
            and not (outcome == "client_closed" and ex.ticket is not None):
        return
    # a first token's time only (DecisionRecord.ttft_is_first_token): a whole answer's first byte (not streamed) and
    # a streamed tool loop's (after whole model turns) are no time to first token (the GenAI conventions' metric is
    # the time to generate the first token; until the thirty-fourth session a streamed tool loop's was observed)
    first_ms = None if ex.record is None else first_token_ms(ex.record.to_first_byte())
    ttft = None if first_ms is None else first_ms / 1000
    metrics.genai(OPERATIONS.get(ex.route, "chat"), ex.model, time.time() - ex.started, ttft, usage,
                  outcome if is_error(outcome) else "", ex.served_site() if ttft is not None else None,
                  written=written, what=ex.route)
