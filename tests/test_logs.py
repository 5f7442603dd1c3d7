"""Structured logs: one JSON object per line, with the call's fields at the top level."""

from __future__ import annotations

import io
import json
import logging

import pytest

from aigrid.logs import configure, fields


def test_json_lines_with_fields_and_level_filter() -> None:
    out = io.StringIO()
    handler = configure("warning", out)
    try:
        log = logging.getLogger("aigrid.proxy")
        log.info("not shown at warning")
        log.warning("endpoint %s failed", "fra-1", extra=fields(endpoint="fra-1", reason="refused"))
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with a traceback")
    finally:
        logging.getLogger("aigrid").handlers.remove(handler)
        logging.getLogger("aigrid").propagate = True
        logging.getLogger("uvicorn.error").handlers.remove(handler)
        logging.getLogger("uvicorn.error").propagate = True
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert {k: lines[0][k] for k in ("level", "logger", "msg", "endpoint", "reason")} == {
        "level": "warning", "logger": "aigrid.proxy", "msg": "endpoint fra-1 failed", "endpoint": "fra-1",
        "reason": "refused"}
    assert lines[0]["ts"].endswith("Z") and "ValueError: boom" in lines[1]["exc"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure("verbose")
