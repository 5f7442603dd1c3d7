import numpy as np
import pytest

from aigrid.rightsize.curve import random_curve, router_curve
from aigrid.rightsize.sw_ranking import outcomes, sw_crossfit_scores, sw_scores


def test_perfect_router_recovers_the_gap_with_the_fewest_large_calls():
    small = np.array([1.0, 0.0, 1.0, 0.0])
    large = np.array([1.0, 1.0, 1.0, 0.0])
    c = router_curve("perfect", large - small, small, large)
    assert c.quality[0] == pytest.approx(0.5) and c.quality[-1] == pytest.approx(0.75)
    assert c.cpt(0.5) == pytest.approx(0.25) and c.cpt(0.8) == pytest.approx(0.25)
    assert c.at(0.25) == (pytest.approx(0.75), pytest.approx(1.0))
    # PGR: 0 at 0 calls, 1 from 1 call on: area = 1 - half of the first step
    assert c.apgr == pytest.approx(1 - 0.125)


def test_random_mix_is_the_diagonal():
    small, large = np.array([0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0])
    r = random_curve(small, large)
    assert r.apgr == pytest.approx(0.5)
    assert r.cpt(0.5) == pytest.approx(2 / 3)  # first grid point at or past half


def test_worst_router_is_below_random():
    small = np.array([1.0, 0.0, 1.0, 0.0])
    large = np.array([1.0, 1.0, 1.0, 0.0])
    assert router_curve("worst", small - large, small, large).apgr < 0.5


def test_sw_ranking_scores_near_neighbours_by_their_outcomes():
    # two clusters of identical vectors: the large model wins in one, ties in the other
    vectors = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10, np.float32)
    small = np.array([0.0] * 10 + [1.0] * 10)
    large = np.ones(20)
    won = outcomes(small, large)
    assert won.tolist() == [1.0] * 10 + [0.5] * 10
    scores = sw_crossfit_scores(vectors, small, large)
    assert scores[:10].min() > scores[10:].max()
    # from a reference set: weights 10 x 10^(sim / max sim) -> 100 for the own cluster, 10 for the other
    ref = sw_scores(vectors[:1], vectors, won)
    assert ref[0] == pytest.approx((100 * 10 * 1.0 + 10 * 10 * 0.5) / (100 * 10 + 10 * 10))


def test_tied_scores_are_one_choice_a_constant_score_is_random_mixing():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 2, 101).astype(float)
    large = rng.integers(0, 2, 101).astype(float)
    flat = router_curve("flat", np.zeros(101), small, large)
    assert flat.quality == pytest.approx(random_curve(small, large).quality)
    # file order never helps: the same prompts sorted best-first give the same tied curve
    order = np.argsort(-(large - small), kind="stable")
    assert router_curve("flat", np.zeros(101), small[order], large[order]).apgr == pytest.approx(0.5)
