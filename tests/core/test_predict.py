"""core/predict.py: warm_cache (the scheduler's, once per request) finds exactly the endpoints that last
served a request's prefix or session and counts what each holds; the work ahead replayed from the pending
prompts placed in time (backlog_tokens)."""

from __future__ import annotations

import itertools

import pytest

from aigrid.core.predict import CACHED_FRACTION, backlog_tokens, drain_tps, predict, step_ms, warm_cache
from aigrid.core.types import EndpointState, PrefillQueue, RequestInfo
from tests.core.grid import SITES, endpoint


def test_warm_cache_finds_the_owner_of_either_key() -> None:
    owners = [{}, {"p": "a"}, {"s": "b"}, {"p": "a", "s": "b"}, {"p": "a", "s": "a"}, {"x": "a"}]
    for prefix, session, owner in itertools.product([None, "p", "x"], [None, "s", "y"], owners):
        request = RequestInfo("r", "small", 100, prefix_hash=prefix, session=session)
        expected = {owner[k] for k in (prefix, session) if k is not None and k in owner}
        assert set(warm_cache(request, owner)) == expected, (prefix, session, owner)


def test_warm_cache_counts_the_system_prompt_or_the_conversation() -> None:
    """A shared prefix of known size (an app's system prompt) holds its own tokens; a conversation's owner
    (the session key) holds CACHED_FRACTION of the prompt; one endpoint holding both, the larger; never the
    whole prompt."""
    app = RequestInfo("r", "small", 1000, prefix_hash="p", session="c", prefix_tokens=300)
    assert warm_cache(app, {"p": "a", "c": "b"}) == {"a": 300.0, "b": 1000 * CACHED_FRACTION}
    assert warm_cache(app, {"p": "a", "c": "a"}) == {"a": 1000 * CACHED_FRACTION}
    unknown = RequestInfo("r", "small", 1000, prefix_hash="p")
    assert warm_cache(unknown, {"p": "a"}) == {"a": 1000 * CACHED_FRACTION}
    repeated = RequestInfo("r", "small", 40, prefix_hash="p", prefix_tokens=40)  # the same prompt again
    assert warm_cache(repeated, {"p": "a"}) == {"a": 39.0}
    ep = endpoint("fra")
    assert predict(app, ep, SITES["fra"], EndpointState(), 300.0).model_own_ms == pytest.approx(
        predict(RequestInfo("r", "small", 700), ep, SITES["fra"], EndpointState()).model_own_ms)


def test_backlog_replays_the_pending_prompts_in_arrival_order() -> None:
    rate = 1000.0  # tokens per second
    # nothing known ahead, or everything after the anchor's request done long ago
    assert backlog_tokens(PrefillQueue(None, ()), 0.05, rate) == 0.0
    # 500 tokens that arrived 0.2 s ago: 200 done by now, 150 more by the time this request arrives
    assert backlog_tokens(PrefillQueue(None, ((-0.2, 500),)), 0.15, rate) == pytest.approx(150.0)
    # a prompt that reaches the engine after this request is not ahead of it
    assert backlog_tokens(PrefillQueue(None, ((0.3, 800),)), 0.1, rate) == 0.0
    # an idle gap drains nothing twice: 100 tokens done 0.1 s after they came, then 400 more arrive
    assert backlog_tokens(PrefillQueue(None, ((-1.0, 100), (-0.1, 400))), 0.0, rate) == pytest.approx(300.0)
    # from the anchor (a first token 50 ms ago): what arrived before it had not started then
    queue = PrefillQueue(-0.05, ((-0.3, 200), (-0.2, 300)))
    assert backlog_tokens(queue, 0.05, rate) == pytest.approx(500.0 - 100.0)


def test_the_prediction_counts_only_the_work_still_ahead() -> None:
    ep = endpoint("fra", slots=64)
    req = RequestInfo("r", "small", 100)
    counted = EndpointState(pending_requests=2, pending_prompt_tokens=4000)
    # the same 4,000 tokens, placed in time: one prompt well under way, one arriving after this request
    placed = counted._replace(prefill_queue=PrefillQueue(None, ((-1.0, 2000), (5.0, 2000))))
    empty = counted._replace(prefill_queue=PrefillQueue(None, ()))
    all_ahead = predict(req, ep, SITES["fra"], counted)
    still_ahead = predict(req, ep, SITES["fra"], placed)
    nothing = predict(req, ep, SITES["fra"], empty)
    assert all_ahead.queue_ms > still_ahead.queue_ms > nothing.queue_ms == 0.0
    assert nothing.prefill_ms == still_ahead.prefill_ms == all_ahead.prefill_ms
    # waiting for a batch slot, the prompts ahead wait too: they count whole (nothing drains), and the one
    # that arrives after this request still does not
    full = placed._replace(running=64, waiting=10)
    whole = counted._replace(running=64, waiting=10, pending_prompt_tokens=2000)
    assert predict(req, ep, SITES["fra"], full).queue_ms == pytest.approx(
        predict(req, ep, SITES["fra"], whole).queue_ms)


def test_while_the_request_travels_only_the_share_of_the_drain_the_inflow_leaves_counts() -> None:
    """RT1 (thirty-third session): the engine drains its backlog while a request travels to it, but it also
    takes in the prompts sent meanwhile from nearer clients, which reach it first; at the full drain a busy
    far site looked emptier the farther away the client was (docs/routing.md, "Near or fast")."""
    rate = 1000.0
    past = PrefillQueue(None, ((-0.2, 500),))  # 200 tokens done by now
    assert backlog_tokens(past, 0.15, rate, 0.0) == pytest.approx(300.0)
    assert backlog_tokens(past, 0.15, rate, 0.5) == pytest.approx(300.0 - 75.0)
    # a prompt still travelling joins at its arrival; from then on the share drains
    assert backlog_tokens(PrefillQueue(None, ((0.05, 400),)), 0.15, rate, 0.5) == pytest.approx(400.0 - 50.0)

    ep = endpoint("fra", slots=64)
    req = RequestInfo("r", "small", 100)  # no client location: the gateway's measured round trip
    queue = PrefillQueue(None, ((-0.01, 3000),))
    quiet = EndpointState(pending_requests=1, pending_prompt_tokens=3000, prefill_queue=queue)
    busy = quiet._replace(running=20)  # 20 in the system: ~23,000 prompt tokens a second come in, over the drain

    def queue_ms(state: EndpointState, rtt: float) -> float:
        return predict(req, ep, SITES["fra"], state._replace(rtt_ms=rtt)).queue_ms

    # saturated, the backlog a far request meets is the one a near request meets
    assert queue_ms(busy, 200.0) == pytest.approx(queue_ms(busy, 10.0))
    # one request in the system: ~1,150 tokens a second come in, so part of the drain over the 95 ms longer
    # trip still counts, but not all of it (what it did before)
    full = (backlog_tokens(queue, 0.005, drain_tps(ep, quiet, step_ms(ep, quiet)))
            - backlog_tokens(queue, 0.1, drain_tps(ep, quiet, step_ms(ep, quiet)))) * 1000.0 / ep.prefill_tps
    gained = queue_ms(quiet, 10.0) - queue_ms(quiet, 200.0)
    assert 0.3 * full < gained < 0.7 * full


def test_an_owner_is_warm_even_when_nothing_of_the_prompt_can_be_cached() -> None:
    """Warmth is who served the prefix or session last (what the affinity axis and the explanation show),
    whatever the size: an empty prompt's owner is warm with nothing cached (found by the scopes property)."""
    empty = RequestInfo("r", "small", 0, prefix_hash="p")
    assert warm_cache(empty, {"p": "a"}) == {"a": 0.0}
    conversation = RequestInfo("r", "small", 0, session="s:alice")  # the same by its session key (found again)
    assert warm_cache(conversation, {"s:alice": "a"}) == {"a": 0.0}
    ep = endpoint("fra")
    assert predict(empty, ep, SITES["fra"], EndpointState(), 0.0).warm
    assert not predict(empty, ep, SITES["fra"], EndpointState()).warm
