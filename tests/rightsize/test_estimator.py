import numpy as np
import pytest

from aigrid.errors import AigridError
from aigrid.rightsize.estimator import MonotoneMap, QualityEstimator, RankBlend
from aigrid.rightsize.sw_ranking import NeighbourScore, quantize

PROMPTS = ["Which of these is a mammal? A. Shark B. Dolphin C. Trout D. Octopus",
           "Write a Python function that merges two sorted lists.",
           "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."]


def _with_neighbours(est: QualityEstimator, blend: float) -> QualityEstimator:
    vectors = np.stack([est.embedding.vector(p) for p in PROMPTS])
    nb = NeighbourScore(quantize(vectors), np.array([0.0, 1.0, 0.5], np.float32), k=1)
    return QualityEstimator(est.embedding, est.ngram, est.heads, est.meta, est.table, nb, False, blend)


def test_the_gain_blends_the_gain_head_with_the_nearest_labelled_prompts_win_share(tmp_path):
    shipped = QualityEstimator.load()
    heads_only = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table)
    # blend 1: the gain is the nearest labelled prompt's outcome (lost, won, tie) as a gain
    pure = _with_neighbours(shipped, 1.0)
    assert [round(pure.estimate(p).gain, 6) for p in PROMPTS] == [-1.0, 1.0, 0.0]
    half = _with_neighbours(shipped, 0.5)
    for p, near in zip(PROMPTS, (-1.0, 1.0, 0.0), strict=True):
        head = heads_only.estimate(p)
        est = half.estimate(p)
        assert est.gain == pytest.approx(0.5 * head.gain + 0.5 * near, abs=1e-6)
        assert (est.p_small, est.p_large) == (head.p_small, head.p_large)  # only the router's gain is blended
    # the table, k and blend survive a save and load
    half.save(tmp_path / "q.npz")
    again = QualityEstimator.load(tmp_path / "q.npz", embedding=shipped.embedding)
    assert again.blend == 0.5 and again.neighbours is not None and again.neighbours.k == 1
    assert [again.estimate(p) for p in PROMPTS] == [half.estimate(p) for p in PROMPTS]


def test_a_blend_without_a_neighbour_table_is_refused():
    shipped = QualityEstimator.load()
    with pytest.raises(AigridError, match="no neighbour table"):
        QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table, None, False, 0.3)


def test_a_monotone_map_interpolates_like_numpy_and_a_cdf_counts_ties_one_half():
    m = MonotoneMap((0.0, 1.0, 3.0), (0.0, 0.5, 2.5))
    xs = np.array([-1.0, 0.0, 0.25, 1.0, 2.0, 3.0, 7.0])
    assert [m(float(v)) for v in xs] == pytest.approx(m.apply(xs).tolist())
    assert m.apply(xs).tolist() == pytest.approx([0.0, 0.0, 0.125, 0.5, 1.5, 2.5, 2.5])
    cdf = MonotoneMap.cdf(np.array([0.0, 0.0, 1.0, 2.0]))
    assert (cdf(0.0), cdf(1.0), cdf(2.0)) == pytest.approx((0.25, 0.625, 0.875))
    matched = MonotoneMap.quantile_match(np.arange(10.0), np.arange(10.0) ** 2)
    assert matched(3.0) == pytest.approx(9.0, abs=0.01)
    assert all(b > a for a, b in zip(matched.y, matched.y[1:], strict=False))
    with pytest.raises(AigridError, match="strictly increasing"):
        MonotoneMap((0.0, 0.0), (0.0, 1.0))


def test_a_rank_blend_orders_by_the_two_estimates_ranks_and_survives_a_save_and_load(tmp_path):
    shipped = QualityEstimator.load()
    base = _with_neighbours(shipped, 0.5)
    heads_only = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table)
    head = np.array([heads_only.estimate(p).gain for p in PROMPTS])
    near = np.array([-1.0, 1.0, 0.0])
    # reference values in which the second prompt's head gain ranks first and the neighbour gains as given
    rank = RankBlend(MonotoneMap.cdf(np.concatenate([head, head - 1, head + 1])), MonotoneMap.cdf(near),
                     MonotoneMap((0.0, 1.0), (-1.0, 1.0)))
    est = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table,
                           base.neighbours, False, 0.5, rank)
    gains = [est.estimate(p).gain for p in PROMPTS]
    want = [2 * (0.5 * rank.head(h) + 0.5 * rank.near(n)) - 1 for h, n in zip(head, near, strict=True)]
    assert gains == pytest.approx(want, abs=1e-6)
    est.save(tmp_path / "q.npz")
    again = QualityEstimator.load(tmp_path / "q.npz", embedding=shipped.embedding)
    assert again.rank == rank and [again.estimate(p) for p in PROMPTS] == [est.estimate(p) for p in PROMPTS]
    with pytest.raises(AigridError, match="blends ranks but has no neighbour table"):
        QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table,
                         None, False, 0.0, rank)


def test_a_monotone_map_refuses_points_that_are_not_finite() -> None:
    """A NaN passes the strictly-increasing check (every comparison with it is false): refused on its own."""
    import math

    for x, y in (((0.0, math.nan, 2.0), (0.0, 1.0, 2.0)), ((0.0, 1.0), (0.0, math.inf))):
        with pytest.raises(AigridError, match="finite"):
            MonotoneMap(x, y)
