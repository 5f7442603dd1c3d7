"""The in-flight ledger: pending (with prompt tokens) until the first token, decoding until the end."""

from __future__ import annotations

from aigrid.core.types import EndpointState
from aigrid.telemetry.inflight import InflightLedger, Load, combined, merged_state


def test_pending_then_decoding_then_gone() -> None:
    led = InflightLedger()
    led.sent("e", 100)
    led.sent("e", 50)
    assert led.get("e") == Load(2, 150, 0)
    led.first_token("e", 100)
    assert led.get("e") == Load(1, 50, 1)
    led.finished("e", 100, had_first_token=True)
    led.finished("e", 50, had_first_token=False)  # failed before its first token
    assert led.get("e") is None


def test_unmatched_events_never_go_negative() -> None:
    led = InflightLedger()
    led.first_token("e", 10)
    led.finished("e", 10, True)
    led.sent("e", 10)
    led.finished("e", 99, had_first_token=True)  # a stray finish only clears what is there
    assert led.get("e") == Load(1, 10, 0)


def test_merged_state_raises_stale_scrape_to_what_the_ledger_proves() -> None:
    scraped = EndpointState(running=1, waiting=0)
    s = merged_state(scraped, combined(Load(3, 900, 1), Load(2, 100, 0)), slots=4)
    assert (s.running, s.waiting) == (4, 2)
    assert (s.pending_requests, s.pending_prompt_tokens, s.decoding) == (5, 1000, 1)
    assert merged_state(scraped, None, 4) is scraped
