"""The pending prompts placed in time (telemetry/prefill_book.py): one gateway's book, its report to the
others and back, and the PrefillQueue the predictor reads."""

from __future__ import annotations

import json

import pytest

from aigrid.telemetry.prefill_book import (
    ANCHOR_HORIZON_S,
    PrefillBook,
    from_wire,
    latest,
    merge_reports,
    queue_of,
    to_wire,
)


def test_a_first_token_anchors_the_book_and_rules_out_what_arrived_before_it() -> None:
    book = PrefillBook()
    book.sent("fra", "a", arrives_at=10.0, prompt_tokens=500)
    book.sent("fra", "b", arrives_at=10.2, prompt_tokens=300)
    book.sent("fra", "c", arrives_at=10.4, prompt_tokens=200)
    q = queue_of(book.anchor("fra"), book.arrivals("fra"), now=10.5)
    assert q.anchor_s is None and [tokens for _, tokens in q.arrivals] == [500, 300, 200]
    assert [at for at, _ in q.arrivals] == pytest.approx([-0.5, -0.3, -0.1])  # relative to now, oldest first
    # b's first token: the engine produced it at 10.6; a arrived before b, so a is done too (prefill in order)
    book.first_token("fra", "b", produced_at=10.6)
    assert book.anchor("fra") == (10.6, 10.2)
    q = queue_of(book.anchor("fra"), book.arrivals("fra"), now=11.0)
    assert q.anchor_s is not None and abs(q.anchor_s + 0.4) < 1e-9
    assert [tokens for _, tokens in q.arrivals] == [200]  # a (before b) is left out, c (after b) stays


def test_an_older_first_token_does_not_move_the_anchor_back() -> None:
    book = PrefillBook()
    book.sent("fra", "a", 1.0, 100)
    book.sent("fra", "b", 2.0, 100)
    book.first_token("fra", "b", produced_at=3.0)
    book.first_token("fra", "a", produced_at=2.5)  # a's first token came back later than b's (a longer trip)
    assert book.anchor("fra") == (3.0, 2.0)
    assert latest(None, (1.0, 0.5), (2.0, 1.0), None) == (2.0, 1.0)
    assert latest(None, None) is None


def test_a_failed_request_leaves_the_book_without_anchoring_it() -> None:
    book = PrefillBook()
    book.sent("fra", "a", 1.0, 100)
    assert book.has_pending("fra")
    assert book.drop("fra", "a") == (1.0, 100)
    assert not book.has_pending("fra") and book.anchor("fra") is None
    assert book.drop("fra", "a") is None  # twice: nothing left to drop
    book.first_token("fra", "never-sent", produced_at=5.0)
    assert book.anchor("fra") is None


def test_the_report_travels_in_wall_time_and_forgets_old_anchors() -> None:
    book = PrefillBook()
    book.sent("fra", "a", 100.0, 700)
    book.sent("par", "b", 99.0, 50)
    book.first_token("par", "b", produced_at=99.5)
    report = book.report(now=100.0, shift=1_000.0)
    assert report == {"fra": (None, ((1_100.0, 700),)), "par": ((1_099.5, 1_099.0), ())}
    assert from_wire(json.loads(json.dumps(to_wire(report)))) == report
    later = book.report(now=99.5 + ANCHOR_HORIZON_S + 1.0)
    assert "par" not in later and book.anchor("par") is None


def test_reports_merge_into_the_latest_anchor_and_every_pending_prompt() -> None:
    one = {"fra": ((5.0, 4.0), ((6.0, 100),))}
    two = {"fra": ((5.5, 4.5), ((6.5, 200),)), "par": (None, ((7.0, 300),))}
    assert merge_reports([one, two]) == {"fra": ((5.5, 4.5), ((6.0, 100), (6.5, 200))),
                                         "par": (None, ((7.0, 300),))}


def test_a_malformed_report_is_left_out_not_raised() -> None:
    good = {"fra": [[5.0, 4.0], [[6.0, 100]]]}
    bad = {"par": "x", "ber": [[1.0], []], "muc": [None, [["a", 1]]], **good}
    assert from_wire(bad) == {"fra": ((5.0, 4.0), ((6.0, 100),))}
    assert from_wire(None) == {} and from_wire([1, 2]) == {}
