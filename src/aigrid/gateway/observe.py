"""The end of one audited request in the observability signals: its span ends (tracing.py) with the usage,
the outcome and the error, and the GenAI metrics (metrics.py) count it. Called once, from the `finally`
that closes the Exchange (routes.Audited)."""

from __future__ import annotations

import time

from aigrid.audit.record import is_error
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.tracing import OPERATIONS


def observe(ex: Exchange, metrics: GatewayMetrics) -> None:
    usage, outcome = ex.final_usage(), ex.final_outcome()
    ex.trace.end(ex.record, usage, ex.failure(), outcome)
    # only requests whose model the grid knows (a decision was made, the embedder answered, or a client that
    # hung up after its request was checked, model included: it has a ticket): the model label never takes a
    # value a client made up
    if ex.record is None and not (outcome == "ok" and ex.usage is not None) \
            and not (outcome == "client_closed" and ex.ticket is not None):
        return
    ttft = None
    if ex.record is not None and ex.record.ttft_ms is not None and ex.body.get("stream"):
        ttft = ex.record.ttft_ms / 1000
    metrics.genai(OPERATIONS.get(ex.route, "chat"), ex.model, time.time() - ex.started, ttft, usage,
                  outcome if is_error(outcome) else "", ex.served_site() if ttft is not None else None)
