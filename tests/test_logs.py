"""Structured logs: one JSON object per line, with the call's fields at the top level."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest

from aigrid.logs import configure, fields


def test_json_lines_with_fields_and_level_filter() -> None:
    out = io.StringIO()
    sink = configure("warning", out)
    try:
        log = logging.getLogger("aigrid.proxy")
        log.info("not shown at warning")
        log.warning("endpoint %s failed", "fra-1", extra=fields(endpoint="fra-1", reason="refused"))
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with a traceback")
    finally:
        sink.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert {k: lines[0][k] for k in ("level", "logger", "msg", "endpoint", "reason")} == {
        "level": "warning", "logger": "aigrid.proxy", "msg": "endpoint fra-1 failed", "endpoint": "fra-1",
        "reason": "refused"}
    assert lines[0]["ts"].endswith("Z") and "ValueError: boom" in lines[1]["exc"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure("verbose")


def test_a_stalled_output_drops_records_instead_of_blocking() -> None:
    unblocked = threading.Event()

    class Stalled(io.StringIO):
        def write(self, s: str) -> int:
            unblocked.wait(10)  # a pipe nobody reads, until the test is done
            return len(s)

    sink = configure("info", Stalled(), queue_max=3)
    try:
        log = logging.getLogger("aigrid.access")
        t0 = time.perf_counter()
        for i in range(50):
            log.info("request %d", i)
        # the caller never waited for the output: one wait would be 10 s. (The stall was a 0.5 s sleep per
        # write and the bound 0.4 s, a margin a loaded machine could eat; the writer is now held until released.)
        assert time.perf_counter() - t0 < 5.0
        assert sink.dropped >= 40
    finally:
        unblocked.set()
        sink.stop()


def test_a_process_field_is_on_every_line() -> None:
    """A gateway worker's lines carry its number: each worker scrapes the engines and logs alike, and two
    identical "endpoint ... is now UNHEALTHY" lines read as one event logged twice."""
    out = io.StringIO()
    sink = configure("warning", out, process={"worker": 1})
    try:
        logging.getLogger("aigrid.scraper").warning("endpoint nrt-1 is now UNHEALTHY")
        logging.getLogger("aigrid.proxy").warning("failed", extra=fields(endpoint="nrt-1"))
    finally:
        sink.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["worker"] for line in lines] == [1, 1] and lines[1]["endpoint"] == "nrt-1", lines
    assert list(lines[0]) == ["ts", "level", "logger", "worker", "msg"], lines[0]
