"""The (event, data) pairs of a server-sent-events body, as the dashboard's live feed writes them (dashboard/sse.py):
what its tests, and the gateway's tests of the feed's ends, read."""

from __future__ import annotations

import orjson


def parse_sse(raw: bytes) -> list[tuple[str, object]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = block.split("\n")
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
        data = [ln[6:] for ln in lines if ln.startswith("data: ")]
        if name and data:
            events.append((name, orjson.loads(data[0])))
    return events
