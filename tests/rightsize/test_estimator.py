import numpy as np
import pytest

from aigrid.errors import AigridError
from aigrid.rightsize.estimator import QualityEstimator
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
