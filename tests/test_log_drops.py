"""Lines dropped while the log output did not keep up are reported in the log itself (logs.py): before, they were
counted in LogSink.dropped, which nothing read."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from aigrid.logs import configure


def test_the_first_line_after_drops_says_how_many_went() -> None:
    unblocked = threading.Event()

    class Stalled(io.StringIO):
        def write(self, s: str) -> int:
            unblocked.wait(10)  # a pipe nobody reads, until released
            return super().write(s)

    out = Stalled()
    sink = configure("info", out, queue_max=3)
    try:
        log = logging.getLogger("aigrid.access")
        for i in range(50):
            log.info("request %d", i)
        dropped = sink.dropped
        assert dropped >= 40
        unblocked.set()
        deadline = time.monotonic() + 10
        while sink.handler._waiting.qsize() and time.monotonic() < deadline:  # the writer caught up
            time.sleep(0.01)
        log.info("after")
        log.info("and again")
    finally:
        unblocked.set()
        sink.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["msg"] for line in lines[-3:]] == [
        f"{dropped} log lines dropped: the output did not keep up (3 lines waiting, the most the queue holds)",
        "after", "and again"], lines
    assert lines[-3]["level"] == "warning" and lines[-3]["logger"] == "aigrid.logs"
    assert len(lines) == 50 - dropped + 3  # what was queued, the report and the two after
