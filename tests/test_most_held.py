"""most_held.MostHeld: the tenant holding the most, kept as counts move by one (the rule of the score cache and the
decision log past their size)."""

from __future__ import annotations

import random

import pytest

from aigrid.most_held import MostHeld


def test_the_tenant_holding_the_most_is_the_first_to_come_to_that_count() -> None:
    most = MostHeld()
    assert most.most() is None
    most.moved("a", 0, 1)
    most.moved("b", 0, 1)
    assert most.most() == "a"  # a came to 1 first
    most.moved("b", 1, 2)
    assert most.most() == "b"
    most.moved("a", 1, 2)
    assert most.most() == "b"  # both at 2: b came first
    most.moved("b", 2, 1)
    assert most.most() == "a"
    most.moved("a", 2, 1)
    most.moved("a", 1, 0)
    most.moved("b", 1, 0)
    assert most.most() is None


def test_it_agrees_with_a_walk_of_every_tenant() -> None:
    """Random moves by one: the tenant named holds as many as the most any holds (what a walk would find)."""
    rng = random.Random(7)
    most, held = MostHeld(), dict.fromkeys("abcdefgh", 0)
    for _ in range(5000):
        tenant = rng.choice(list(held))
        now = held[tenant] + (1 if held[tenant] == 0 or rng.random() < 0.55 else -1)
        most.moved(tenant, held[tenant], now)
        held[tenant] = now
        named = most.most()
        top = max(held.values())
        assert (named is None) if top == 0 else (named is not None and held[named] == top)


def test_a_count_that_jumps_is_refused() -> None:
    with pytest.raises(ValueError, match="moves by one"):
        MostHeld().moved("a", 0, 2)


def test_holdings_of_any_size_agree_with_a_walk_of_every_tenant() -> None:
    """By any amount (fair_lru's bytes): the tenant named holds as much as the most any holds, ties to the first to
    come to it."""
    rng = random.Random(11)
    most, held = MostHeld(by_one=False), dict.fromkeys("abcdefgh", 0)
    for _ in range(5000):
        tenant = rng.choice(list(held))
        now = max(0, held[tenant] + rng.randint(-300, 400))
        most.moved(tenant, held[tenant], now)
        held[tenant] = now
        named = most.most()
        top = max(held.values())
        assert (named is None) if top == 0 else (named is not None and held[named] == top)
    most = MostHeld(by_one=False)
    most.moved("a", 0, 500)
    most.moved("b", 0, 500)
    most.moved("c", 0, 900)
    most.moved("c", 900, 100)
    assert most.most() == "a"
