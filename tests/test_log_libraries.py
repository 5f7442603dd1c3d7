"""Other libraries' warnings and errors are JSON lines of aigrid.logs too (logs.py): without a handler on the
root logger they went to Python's last-resort handler, bare text, each line of a traceback a line of its own."""

from __future__ import annotations

import io
import json
import logging

from aigrid.logs import configure


def test_a_librarys_warning_with_its_traceback_is_one_json_line_and_its_info_is_not_written() -> None:
    out = io.StringIO()
    sink = configure("info", out)
    try:
        try:
            raise RuntimeError("boom\n\x1b[31mnot a line")
        except RuntimeError:
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
        logging.getLogger("opentelemetry.exporter").info("exported 5 spans")  # below warning: not written
        logging.getLogger("aigrid.proxy").info("an aigrid line")  # once, not again through the root logger
    finally:
        sink.stop()
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["logger"], r["level"], r["msg"]) for r in records] == [
        ("asyncio", "error", "Task exception was never retrieved"), ("aigrid.proxy", "info", "an aigrid line")]
    assert "RuntimeError: boom\n\x1b[31mnot a line" in records[0]["exc"] and lines[0].isprintable()
    assert sink._others not in logging.getLogger().handlers  # stop() took it off the root logger


def test_a_python_warning_is_one_json_line() -> None:
    """A warning of Python's `warnings` (a library's RuntimeWarning, a coroutine never awaited) went to stderr as
    bare text of two lines, its message raw (an ESC, a line break that forged a JSON line), among the JSON lines."""
    import warnings

    out = io.StringIO()
    shown_by = warnings.showwarning
    sink = configure("info", out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn('peer said: \x1b[2J\n{"level": "error", "msg": "forged"}', RuntimeWarning, stacklevel=1)
    finally:
        sink.stop()
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["logger"] == "py.warnings" and record["level"] == "warning" and "\x1b[2J" in record["msg"]
    assert line.isprintable() and warnings.showwarning is shown_by  # stop() gave the warnings back
