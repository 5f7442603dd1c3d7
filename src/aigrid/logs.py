"""Structured logs: one JSON object per line on stderr, configured once by the process that serves.

    log.warning("endpoint failed", extra=fields(endpoint="fra-1", reason="connect refused"))
    -> {"ts": "2026-12-01T17:20:00.123Z", "level": "warning", "logger": "aigrid.proxy",
        "msg": "endpoint failed", "endpoint": "fra-1", "reason": "connect refused"}

Loggers: `aigrid.access` (one line per request: decision id, tenant, site, outcome, timings), and the
component loggers (`aigrid.proxy` engine failures, `aigrid.telemetry` breaker changes, `aigrid.scraper`,
`aigrid.sync`, `aigrid.audit.log`, ...). The level comes from the spec (`gateway.log_level`) or the CLI's
`--log-level`. Libraries only log; configure() is called by the CLI's serving commands, never on import.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
_FIELDS = "aigrid_fields"


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: the values become top-level keys of the JSON line."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        out.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """JSON lines at `level` and above for every aigrid logger (and uvicorn's errors)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("aigrid", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    return handler
