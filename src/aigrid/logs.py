"""Structured logs: one JSON object per line on stderr, configured once by the process that serves.

    log.warning("endpoint failed", extra=fields(endpoint="fra-1", reason="connect refused"))
    -> {"ts": "2026-12-01T17:20:00.123Z", "level": "warning", "logger": "aigrid.proxy",
        "msg": "endpoint failed", "endpoint": "fra-1", "reason": "connect refused"}

Loggers: `aigrid.access` (one line per request: decision id, tenant, site, outcome, timings), and the
component loggers (`aigrid.proxy` engine failures, `aigrid.telemetry` breaker changes, `aigrid.engines`
embedded engines that died and were restarted, `aigrid.scraper`,
`aigrid.sync`, `aigrid.audit.log`, ...). The level comes from the spec (`gateway.log_level`) or the CLI's
`--log-level`. Libraries only log; configure() is called by the CLI's serving commands, never on import.

Logging never blocks the event loop: records go into a bounded queue and one thread writes them out (a
terminal that scrolls slowly or a pipe nobody reads stalls that thread, not the gateway). When the queue is
full a record is dropped and counted (`LogSink.dropped`), never waited for; the first line written after drops
is preceded by a warning on `aigrid.logs` saying how many. Python's own warnings (`warnings.warn`) are lines of
`py.warnings` (logging.captureWarnings), not bare text on stderr.

A line is bounded and one line on a terminal, whatever a client or an engine put in its values (a model name of
2 MB sent to /v1/embeddings was written whole into the access line; an ESC, a C1 control or a bidi override passed
raw): a line over LINE_MAX_CHARS has each field cut to FIELD_MAX_CHARS, its message to MSG_MAX_CHARS and its
traceback to its last EXC_MAX_CHARS, and every character that is not printable is written as a JSON escape
(`\\u001b`), which reads back as the same value.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import time
from collections.abc import Mapping
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

import orjson

from aigrid.printable import printable_json

LEVELS = ("debug", "info", "warning", "error")
_FIELDS = "aigrid_fields"
LINE_MAX_CHARS = 8192
"""A line longer than this has its values cut (below): an access line is ~450 characters."""
FIELD_MAX_CHARS = 1024
"""What is kept of one field of a line over LINE_MAX_CHARS (a string, or the JSON of a list or an object)."""
MSG_MAX_CHARS = 16384
"""What is kept of a message: a lost audit record's line holds the record in it (about 1 KB, more with tool runs)."""
EXC_MAX_CHARS = 16384
"""What is kept of a traceback: its end, where the exception raised and its innermost frames are."""


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: the values become top-level keys of the JSON line."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def __init__(self, process: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        # fields of every line of this process (a gateway worker's `worker`: each worker scrapes and logs alike)
        self.process = dict(process or {})

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, **self.process,
                               "msg": record.getMessage()}
        out.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = _dumps(out)
        if len(line) > LINE_MAX_CHARS:
            line = _dumps({k: _cut(k, v) for k, v in out.items()})
        return printable_json(line)


def _dumps(out: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(out, default=str).decode()
    except TypeError:  # a value orjson cannot write even as str (an int over 64 bits, a key not a str, a surrogate)
        return json.dumps(out, default=str, ensure_ascii=False)


def _cut(key: str, value: Any) -> Any:
    """`value` within its bound (FIELD_MAX_CHARS; the message MSG_MAX_CHARS, a traceback its last EXC_MAX_CHARS),
    saying how long it was; numbers, booleans and None as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else _dumps({"v": value})[5:-1].strip()
    if key == "exc":
        return text if len(text) <= EXC_MAX_CHARS else f"...({len(text)} chars, the last {EXC_MAX_CHARS} kept) " \
            + text[-EXC_MAX_CHARS:]
    most = MSG_MAX_CHARS if key == "msg" else FIELD_MAX_CHARS
    return value if len(text) <= most else shortened(text, most)


def shortened(text: str, most: int) -> str:
    """`text` within `most` characters (its head), saying how long it was: what a line, a span or an audit record
    keeps of a text a client or an engine wrote."""
    return text if len(text) <= most else f"{text[:most]}...({len(text)} chars)"


class _DroppingQueueHandler(QueueHandler):
    """Queues prepared records for the writer thread; past `queue_max` waiting ones it drops and counts. The
    queue is a SimpleQueue (C, no Python-level lock or condition): a threading.Queue's put woke the writer
    through a Condition on every line (5% of a gateway worker's py-spy samples were in that put under load;
    scripts/bench_access_log.py: 9.7-10.2 -> 8.9 us a line)."""

    def __init__(self, q: queue.SimpleQueue[logging.LogRecord], queue_max: int) -> None:
        super().__init__(q)
        self._waiting = q  # self.queue, typed as the SimpleQueue it is (QueueHandler's is a protocol without qsize)
        self.queue_max = queue_max
        self.dropped = 0
        self._told = 0  # the drops a line has reported

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The JSON line, made here (in the caller), in place of the message: QueueHandler's own prepare
        copies the record first, which this handler, the only one of its loggers, does not need."""
        record.msg = self.format(record)
        record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        """`record` queued, or dropped while `queue_max` wait. The first line queued after drops is preceded by a
        warning saying how many went (counted only before, in `dropped`, which nothing read: a flood of lines, or an
        output that stalled, silently took whatever came meanwhile, a lost audit record's error included)."""
        if self._waiting.qsize() >= self.queue_max:
            self.dropped += 1
            return
        if self.dropped != self._told:
            lost, self._told = self.dropped - self._told, self.dropped
            self._waiting.put_nowait(self.prepare(logging.LogRecord(
                "aigrid.logs", logging.WARNING, __file__, 0, "%d log lines dropped: the output did not keep up "
                "(%d lines waiting, the most the queue holds)", (lost, self.queue_max), None)))
        self._waiting.put_nowait(record)


class LogSink:
    """The configured log output: `stop()` flushes what is queued and ends the writer thread."""

    def __init__(self, handler: _DroppingQueueHandler, listener: QueueListener,
                 others: _DroppingQueueHandler | None = None) -> None:
        self.handler = handler
        self._listener = listener
        self._others = others

    @property
    def dropped(self) -> int:
        return self.handler.dropped + (self._others.dropped if self._others is not None else 0)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Flush what is queued (within `timeout_s` when the output is stalled) and end the writer."""
        for name in ("aigrid", "uvicorn.error"):
            logger = logging.getLogger(name)
            if self.handler in logger.handlers:
                logger.removeHandler(self.handler)
            logger.propagate = True
        if self._others is not None:
            logging.getLogger().removeHandler(self._others)
            logging.captureWarnings(False)
        thread = self._listener._thread
        if thread is None:
            return
        self._listener.queue.put_nowait(self._listener._sentinel)  # type: ignore[attr-defined]
        thread.join(timeout_s)  # a writer stalled for good is left behind (a daemon thread)
        self._listener._thread = None


def configure(level: str = "info", stream: TextIO | None = None, *, queue_max: int = 10_000,
              process: Mapping[str, Any] | None = None) -> LogSink:
    """JSON lines at `level` and above for every aigrid logger (and uvicorn's errors), and at warning and above for
    every other logger, written by a thread;
    `process`: fields on every line (`{"worker": 1}` in a gateway worker, whose lines are otherwise those of
    its siblings: two workers each said "endpoint nrt-smollm2 is now UNHEALTHY", an operator could not tell
    why twice)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    out = logging.StreamHandler(stream or sys.stderr)  # writes the line prepared by the handler below
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _DroppingQueueHandler(q, queue_max)
    handler.setFormatter(JsonFormatter(process))  # the JSON line is made in the caller, tracebacks included
    listener = QueueListener(q, out, respect_handler_level=False)
    for name in ("aigrid", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # every other library's warnings and errors (asyncio's "Task exception was never retrieved", the OTLP
    # exporter's, the MCP SDK's) as JSON lines too: without a handler on the root logger they went to Python's
    # last-resort handler, bare text, a traceback's lines each a line of its own among the JSON
    others = _DroppingQueueHandler(q, queue_max)
    others.setFormatter(handler.formatter)
    others.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    logging.getLogger().addHandler(others)
    # and Python's own warnings (warnings.warn: a library's RuntimeWarning, a coroutine never awaited), which went to
    # stderr as bare text of two lines, the message raw, among the JSON lines: on `py.warnings`, through the above
    logging.captureWarnings(True)
    listener.start()
    return LogSink(handler, listener, others)
