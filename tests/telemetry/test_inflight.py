"""The in-flight ledger: pending (with prompt tokens) until the first token, decoding until the end."""

from __future__ import annotations

from aigrid.core.types import EndpointState
from aigrid.telemetry.inflight import InflightLedger, Load, combined, merged_counts, merged_state


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


def test_a_call_of_several_engine_requests_counts_each() -> None:
    """A call the gateway fans out (n choices, a list of prompts) is `count` requests, its prompt tokens once."""
    led = InflightLedger()
    led.sent("e", 100, count=4)
    led.sent("e", 10)
    assert led.get("e") == Load(5, 110, 0)
    led.first_token("e", 100, count=4)
    assert led.get("e") == Load(1, 10, 4)
    led.finished("e", 100, had_first_token=True, count=4)
    assert led.get("e") == Load(1, 10, 0)
    led.first_token("e", 10, count=3)  # no more move than are pending
    assert led.get("e") == Load(0, 0, 1)


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


def test_merged_counts_take_out_what_finished_since_the_scrape() -> None:
    # scraped with 7 of the ledger's requests there (4 running, 3 queued); 2 have finished since: queued ones
    # took their slots, so 1 waits
    scraped = EndpointState(running=4, waiting=3)
    assert merged_counts(scraped, Load(3, 300, 2), slots=4, seen=7) == (4, 1, 3, 300, 2)
    # an engine that has drained since its scrape: 200 in the scrape, 30 of the ledger's left
    assert merged_counts(EndpointState(running=200), Load(0, 0, 30), slots=512, seen=200)[:2] == (30, 0)
    # the others' work the scrape saw stays: 50 there, 20 of them the ledger's, which have all finished
    assert merged_counts(EndpointState(running=50), None, slots=64, seen=20) == (30, 0, 0, 0, 0)
    # more in flight than at the scrape: nothing taken out, raised to what the ledger proves (the rule before)
    assert merged_counts(EndpointState(running=1), Load(5, 50, 0), slots=4, seen=2) == (4, 1, 5, 50, 0)
    # nothing finished and nothing in flight: no change to make
    assert merged_counts(EndpointState(running=3), None, slots=4, seen=0) is None
