"""An attempt's error as its decision keeps it (`/v1/decisions`, `aigrid explain`): an engine writes it, so it is
bounded where it is recorded (decisions.attempt_error: ERROR_CHARS, what does not print a '?')."""

from __future__ import annotations

import httpx
import orjson

from aigrid.gateway.decisions import ERROR_CHARS
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
LOUD = "\x1b[2J\u202e\n" + "e" * 200_000
"""An engine's error of 200,000 characters opening with a terminal's clear-screen, a bidi override and a line break."""


def bounded(error: str) -> bool:
    return len(error) <= ERROR_CHARS and error.isprintable()


async def test_an_engine_s_error_is_bounded_where_its_attempt_records_it(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    """S (twenty-second session): the error of a failed attempt was kept as the engine wrote it, 200 kB and control
    characters in each of the log's decisions, shown by `/v1/decisions` and `aigrid explain` to a terminal."""
    fakes["nrt-smollm2"].down = True  # fails before its first byte (proxy._fail)
    fakes["nrt-smollm2"].name = LOUD
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": "Tokyo"})
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    failed = d["attempts"][0]
    assert failed["endpoint"] == "nrt-smollm2" and failed["ok"] is False
    assert bounded(failed["error"]) and failed["error"].startswith("?[2J??eee"), failed["error"][:40]
    # broken mid-stream (proxy.abandon): the engine's reason bounded the same way
    for site in ("fra", "iad", "gru"):  # whichever the router picks for Frankfurt (after d84cef73, iad: warm
        fakes[f"{site}-smollm2"].break_after = 2  # from the Tokyo request, 12 ms slower, cheaper) breaks the same way
        fakes[f"{site}-smollm2"].name = site + LOUD.replace("\n", "").replace("\x1b", "")
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"x-aigrid-client-location": "Frankfurt"}) as s:
        await s.aread()
        decision = s.headers["x-aigrid-decision"]
    attempts = (await client.get(f"/v1/decisions/{decision}")).json()["attempts"]
    errors = [a["error"] for a in attempts if "error" in a]
    assert errors and all(bounded(e) for e in errors), [e[:40] for e in errors]
    assert len(orjson.dumps(attempts)) < 4 * ERROR_CHARS * len(attempts)
