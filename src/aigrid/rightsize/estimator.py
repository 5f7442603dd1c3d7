"""The shipped quality estimate: per prompt, how well a mid-size and a large model answer, and the gain.

Three boosted regression tree ensembles (tree_ensemble.py) over `features.py` (a static MiniLM sentence
vector, text statistics and a linear n-gram score, ngram_score.py), trained by scripts/train_quality_estimator.py on RouteLLM's labels (docs/models.md,
the model card): the mid-size reference model's quality (0/1 correct, or a judge score / 10), the large
one's, and the large one's expected gain over the mid-size one (their difference, in [-1, 1]). Squared
error makes each head an estimate of a mean: the first two are probabilities, the third the expected quality
the large model adds. Optionally a neighbour score (sw_ranking.NeighbourScore: the large model's win share
among the most similar labelled training prompts, shipped as an int8 vector table) is one more input of the
trees and/or blended into the gain, both estimates of the same expected gain: either their values, gain =
(1 - blend) x the gain head + blend x (2 x win share - 1), or (`RankBlend`) their ranks among the training
prompts' out-of-fold values, mapped back to the gain scale. Optionally (`judged`, judged_prior.py) the gain of
an MT-Bench-like prompt then moves toward the mean gain of its nearest MT-Bench training prompts. The gain is the
router's score. Inference is a WordPiece split, one
gather, a sparse dot product, a product with the neighbour table and three tree walks: no torch, no
scikit-learn, about a millisecond per prompt on one core (scripts/bench_quality_estimate.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError
from aigrid.rightsize.features import prompt_features
from aigrid.rightsize.judged_prior import JudgedPrior
from aigrid.rightsize.ngram_score import NgramScore
from aigrid.rightsize.static_embedding import StaticEmbedding
from aigrid.rightsize.sw_ranking import NeighbourScore
from aigrid.rightsize.tree_ensemble import TreeEnsemble

ARTEFACT = "quality_estimator.npz"
HEADS: tuple[str, str, str] = ("small", "large", "gain")
"""The mid-size reference model's (Mixtral-8x7B) quality, the large one's (GPT-4), and the large one's gain."""


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """Expected quality in [0, 1] of the reference small and large models on this prompt, and
    p_win = (1 + expected gain of the large one) / 2 (for 0/1 labels: P(large better) with ties one half)."""

    p_small: float
    p_large: float
    p_win: float

    @property
    def gain(self) -> float:
        """The expected quality the large model adds, 2 x p_win - 1: the router's score (higher: send it up)."""
        return 2.0 * self.p_win - 1.0


@dataclass(frozen=True)
class OperatingTable:
    """Measured out of fold (each prompt scored by a model that never saw it) on the training data: per
    threshold `tau` on the gain (send to the large model when gain > tau), the share of large-model calls
    (each benchmark weighted equally) and the mean quality drop against always-large, relative to
    always-large's quality, on the benchmark where that drop is largest."""

    tau: npt.NDArray[np.float64]
    share_large: npt.NDArray[np.float64]
    relative_drop: npt.NDArray[np.float64]

    def threshold_for(self, target: float) -> float:
        """The most permissive tau whose drop, and every stricter tau's, stays within `target` (e.g. 0.02:
        at most 2% below always using the large model)."""
        ok = np.maximum.accumulate(self.relative_drop) <= target + 1e-12
        return float(self.tau[np.flatnonzero(ok)[-1]]) if ok.any() else float(self.tau[0])

    def at(self, tau: float) -> tuple[float, float]:
        """(share of large calls, relative drop) at the nearest tabulated threshold."""
        i = int(np.argmin(np.abs(self.tau - tau)))
        return float(self.share_large[i]), float(self.relative_drop[i])


@dataclass(frozen=True)
class MonotoneMap:
    """A strictly increasing piecewise-linear map, constant beyond its ends; plain Python lists, because
    np.interp on one scalar costs ~25 us and a bisect ~1 us."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) < 2 or any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise AigridError(f"a monotone map needs >= 2 strictly increasing points ({len(self.x)} given)")
        if not all(math.isfinite(v) for v in (*self.x, *self.y)):  # a NaN passes every comparison above
            raise AigridError("a monotone map's points must be finite numbers")

    def __call__(self, v: float) -> float:
        x, y = self.x, self.y
        i = bisect_right(x, v)
        if i == 0:
            return y[0]
        if i == len(x):
            return y[-1]
        return y[i - 1] + (y[i] - y[i - 1]) * (v - x[i - 1]) / (x[i] - x[i - 1])

    def apply(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The map on many values at once (the same arithmetic as calling it on each)."""
        return np.interp(values, self.x, self.y)

    @classmethod
    def cdf(cls, values: npt.NDArray[np.float64], points: int = 1025) -> MonotoneMap:
        """The share of `values` below v (ties counting one half; a midrank), exact at up to `points` of the
        values (evenly spaced in rank), linear between them."""
        ordered = np.sort(np.asarray(values, np.float64))
        q = np.unique(ordered[np.round(np.linspace(0, len(ordered) - 1, points)).astype(np.int64)])
        below = np.searchsorted(ordered, q, "left")
        upto = np.searchsorted(ordered, q, "right")
        return cls(tuple(q.tolist()), tuple(((below + upto) / 2 / len(ordered)).tolist()))

    @classmethod
    def quantile_match(cls, source: npt.NDArray[np.float64], target: npt.NDArray[np.float64],
                       points: int = 1025) -> MonotoneMap:
        """source's p-quantile -> target's p-quantile: a strictly increasing map that gives `source`'s values
        `target`'s distribution (kept strictly increasing by a ramp of at most 1e-6)."""
        p = np.linspace(0, 1, points)
        x, y = np.quantile(source, p), np.maximum.accumulate(np.quantile(target, p)) + p * 1e-6
        keep = np.concatenate([[True], np.diff(x) > 0])
        return cls(tuple(x[keep].tolist()), tuple(y[keep].tolist()))


@dataclass(frozen=True)
class RankBlend:
    """The router's gain from the ranks of its two estimates: r = (1 - blend) x F_head(gain head) + blend x
    F_near(neighbour gain), F the share of the training prompts' out-of-fold values below (a midrank), then r
    mapped to the gain scale by quantile matching (`out`: the training prompts' out-of-fold r -> their
    out-of-fold value blend, (1 - blend) x head + blend x neighbour gain). A rank average ignores how far
    apart the two estimates' values are spread and where their tails lie, only their order."""

    head: MonotoneMap
    near: MonotoneMap
    out: MonotoneMap

    def __call__(self, head_gain: float, near_gain: float, blend: float) -> float:
        return self.out((1.0 - blend) * self.head(head_gain) + blend * self.near(near_gain))

    def arrays(self) -> dict[str, npt.NDArray[np.float64]]:
        return {f"rank_{n}_{a}": np.array(getattr(getattr(self, n), a)) for n in ("head", "near", "out")
                for a in ("x", "y")}

    @classmethod
    def from_arrays(cls, z: Any) -> RankBlend:
        return cls(*(MonotoneMap(tuple(z[f"rank_{n}_x"].tolist()), tuple(z[f"rank_{n}_y"].tolist()))
                     for n in ("head", "near", "out")))


class QualityEstimator:
    """Loads the artefacts once (`load()`); `estimate(text)` is then pure arithmetic."""

    def __init__(self, embedding: StaticEmbedding, ngram: NgramScore, heads: dict[str, TreeEnsemble],
                 meta: dict[str, str], table: OperatingTable | None = None,
                 neighbours: NeighbourScore | None = None, neighbour_feature: bool = False,
                 blend: float = 0.0, rank: RankBlend | None = None, judged: JudgedPrior | None = None) -> None:
        missing = [h for h in HEADS if h not in heads]
        if missing:
            raise AigridError(f"quality estimator lacks heads {missing}")
        self.embedding = embedding
        self.ngram = ngram
        self.heads = heads
        self.meta = meta
        self.table = table
        if (neighbour_feature or blend) and neighbours is None:
            raise AigridError("quality estimator uses a neighbour score but has no neighbour table")
        self.neighbours = neighbours
        self.neighbour_feature = neighbour_feature
        """The neighbour score is the trees' last input."""
        self.blend = blend
        """The router's gain is (1 - blend) x the gain head + blend x (2 x neighbour score - 1), or with `rank`
        the same blend of their ranks, mapped to the gain scale."""
        if rank is not None and neighbours is None:
            raise AigridError("quality estimator blends ranks but has no neighbour table")
        self.rank = rank
        self.judged = judged
        """The prior of MT-Bench-like prompts, applied to the gain last."""

    @classmethod
    def load(cls, path: Path | None = None, embedding: StaticEmbedding | None = None) -> QualityEstimator:
        source = path if path is not None else resources.files("aigrid.rightsize").joinpath(ARTEFACT)
        with source.open("rb") as f, np.load(f, allow_pickle=False) as z:
            meta = {str(k): str(v) for k, v in zip(z["meta_keys"], z["meta_values"], strict=True)}
            table = (OperatingTable(z["tau"], z["share_large"], z["relative_drop"]) if "tau" in z.files else None)
            heads = {h: TreeEnsemble.from_arrays(z, h) for h in HEADS}
            ngram = NgramScore(z["ngram_weights"].astype(np.float32), z["ngram_dense"].astype(np.float32),
                               float(z["ngram_bias"]))
            nb = "neighbour_vectors" in z.files
            neighbours = (NeighbourScore(z["neighbour_vectors"], z["neighbour_won"].astype(np.float32) / 2,
                                         int(z["neighbour_k"])) if nb else None)
            feature, blend = (bool(z["neighbour_feature"]), float(z["neighbour_blend"])) if nb else (False, 0.0)
            rank = RankBlend.from_arrays(z) if "rank_out_x" in z.files else None
            judged = JudgedPrior.from_arrays(z)
        return cls(embedding if embedding is not None else StaticEmbedding.load(), ngram, heads, meta, table,
                   neighbours, feature, blend, rank, judged)

    def save(self, path: Path) -> None:
        keys = sorted(self.meta)
        table = ({} if self.table is None else {"tau": self.table.tau, "share_large": self.table.share_large,
                                                "relative_drop": self.table.relative_drop})
        trees = {k: v for h in HEADS for k, v in self.heads[h].arrays(h).items()}
        nb = self.neighbours
        neighbours = ({} if nb is None else {"neighbour_vectors": nb.vectors, "neighbour_k": np.int64(nb.k),
                                             "neighbour_won": np.round(nb.won * 2).astype(np.int8),
                                             "neighbour_feature": np.bool_(self.neighbour_feature),
                                             "neighbour_blend": np.float64(self.blend)})
        rank: dict[str, Any] = {} if self.rank is None else self.rank.arrays()
        judged: dict[str, Any] = {} if self.judged is None else self.judged.arrays()
        arrays: dict[str, Any] = {
            "meta_keys": np.array(keys), "meta_values": np.array([self.meta[k] for k in keys]),
            "ngram_weights": self.ngram.weights.astype(np.float16), "ngram_dense": self.ngram.dense_weights,
            "ngram_bias": np.float64(self.ngram.bias), **table, **trees, **neighbours, **rank, **judged}
        np.savez_compressed(path, **arrays)

    def estimate(self, text: str) -> QualityEstimate:
        x = prompt_features(text, self.embedding, self.ngram)
        near = 0.0
        if self.neighbours is not None:
            near = self.neighbours.score(x[:self.embedding.dimensions])
            if self.neighbour_feature:
                x = np.append(x, np.float32(near))
        small, large, gain = (self.heads[h].predict(x) for h in HEADS)
        if self.rank is not None:
            gain = self.rank(gain, 2.0 * near - 1.0, self.blend)
        else:
            gain = (1.0 - self.blend) * gain + self.blend * (2.0 * near - 1.0)
        if self.judged is not None:
            gain = self.judged.adjust_one(gain, x, self.embedding.dimensions)
        clamp = lambda v, lo, hi: float(min(max(v, lo), hi))  # noqa: E731
        return QualityEstimate(clamp(small, 0.0, 1.0), clamp(large, 0.0, 1.0), clamp((1.0 + gain) / 2, 0.0, 1.0))
