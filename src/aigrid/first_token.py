"""Whether a decision's first byte is a time to first token: the one reading of DecisionRecord.ttft_is_first_token.

The proxy sets that fact (gateway/proxy.py `measured`: a streamed answer relayed from the engine, no wrapped engine,
the engine not refusing); calibration, the proxy's TTFT metrics, the GenAI TTFT histogram, the access log, the
dashboard, the request span and `aigrid explain` read it (docs/observability.md, "What counts as a time to first
token"). Its own module, with no imports, so the CLI's explain reads it without loading the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def first_token_ms(d: Mapping[str, Any]) -> float | None:
    """A decision's (DecisionRecord.to_dict) time to first token: its ttft_ms where that is a first token's time,
    None where it is a whole answer's first byte (not streamed), a tool loop's or a refusal's (ttft_is_first_token
    false): such a time is no TTFT, and set beside the predicted TTFT it read as a prediction many times wrong. A
    decision without the field (an older gateway's) is read as before, its ttft_ms a first token's."""
    return d.get("ttft_ms") if d.get("ttft_is_first_token", True) else None
