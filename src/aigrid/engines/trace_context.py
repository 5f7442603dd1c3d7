"""W3C trace context for the request an engine adapter is about to send.

The gateway's tracing (gateway/tracing.py) sets the `traceparent` (and `tracestate`) of the current attempt
here, in the attempt's own task; an adapter adds them to its engine request (openai_compat.py). Nothing is
set when tracing is off, so the engine request is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType

TRACE_HEADERS: ContextVar[Mapping[str, str]] = ContextVar("aigrid_trace_headers", default=MappingProxyType({}))
