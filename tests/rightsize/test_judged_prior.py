import numpy as np
import pytest

from aigrid.errors import AigridError
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.judged_prior import JudgedPrior, nearest_mean, shrink
from aigrid.rightsize.sw_ranking import quantize

KIN = ["Write a Python function that merges two sorted lists.",
       "Compose an engaging travel blog post about a recent trip to Hawaii.",
       "Solve for x: 3x + 7 = 22."]
KIN_GAINS = np.array([0.4, -0.1, 0.2], np.float32)


def prior(est: QualityEstimator, bias: float, k: int = 1, share: float = 0.5) -> JudgedPrior:
    """A gate that calls every prompt MT-Bench-like (bias > 0) or none (bias < 0); KIN as the labelled table."""
    vectors = np.stack([est.embedding.vector(p) for p in KIN])
    return JudgedPrior(np.zeros(71, np.float32), bias, 0.9, quantize(vectors), KIN_GAINS, k, share)


def test_nearest_mean_and_shrink() -> None:
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    values = np.array([1.0, -1.0, 0.0])
    assert nearest_mean(np.array([[1.0, 0.0], [0.0, 1.0]]), table, values, 2) == pytest.approx([0.5, -0.5])
    assert nearest_mean(np.array([[1.0, 0.0]]), table, values, 10) == pytest.approx([0.0])
    assert shrink(np.array([0.2, 0.2]), np.array([0.0, 0.0]), np.array([1.0, 0.0]), 0.5) == pytest.approx([0.1, 0.2])


def test_a_gated_prompt_moves_toward_its_nearest_kins_gain_and_an_ungated_one_does_not(tmp_path) -> None:
    shipped = QualityEstimator.load()
    plain = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table,
                             shipped.neighbours, shipped.neighbour_feature, shipped.blend, shipped.rank)
    on = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table,
                          shipped.neighbours, shipped.neighbour_feature, shipped.blend, shipped.rank, prior(shipped, 9.0))
    off = QualityEstimator(shipped.embedding, shipped.ngram, shipped.heads, shipped.meta, shipped.table,
                           shipped.neighbours, shipped.neighbour_feature, shipped.blend, shipped.rank,
                           prior(shipped, -9.0))
    for p, kin in zip(KIN, KIN_GAINS, strict=True):  # each prompt's nearest kin is itself
        g = plain.estimate(p).gain
        assert on.estimate(p).gain == pytest.approx(g + 0.5 * (float(kin) - g), abs=1e-6)
        assert off.estimate(p) == plain.estimate(p)
        assert on.estimate(p).p_small == plain.estimate(p).p_small  # only the router's gain moves
    # the batch form (the trainer's) agrees with the per-request one
    jp = prior(shipped, 9.0, k=2)
    xs = np.stack([np.concatenate([shipped.embedding.vector(p), np.zeros(8, np.float32)]) for p in KIN])
    gains = np.array([0.1, 0.0, -0.3])
    assert jp.adjust(gains, xs, xs[:, :64]) == pytest.approx(
        [jp.adjust_one(float(g), x.astype(np.float32), 64) for g, x in zip(gains, xs, strict=True)], abs=1e-6)
    # the prior survives a save and load; an artefact without one loads without one
    on.save(tmp_path / "q.npz")
    again = QualityEstimator.load(tmp_path / "q.npz", embedding=shipped.embedding)
    assert again.judged is not None and again.judged.k == 1 and again.judged.share == 0.5
    assert [again.estimate(p) for p in KIN] == [on.estimate(p) for p in KIN]
    plain.save(tmp_path / "p.npz")
    assert QualityEstimator.load(tmp_path / "p.npz", embedding=shipped.embedding).judged is None


def test_a_prior_that_cannot_work_is_refused() -> None:
    v = np.zeros((2, 64), np.int8)
    w = np.zeros(71, np.float32)
    with pytest.raises(AigridError, match="does not match"):
        JudgedPrior(w, 0.0, 0.9, v, np.zeros(3, np.float32), 1, 0.5)
    with pytest.raises(AigridError, match="threshold"):
        JudgedPrior(w, 0.0, 1.0, v, np.zeros(2, np.float32), 1, 0.5)
    with pytest.raises(AigridError, match="share"):
        JudgedPrior(w, 0.0, 0.9, v, np.zeros(2, np.float32), 1, 1.5)
