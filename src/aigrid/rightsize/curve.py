"""Quality-vs-cost curves of a two-model router, and the RouteLLM paper's summary numbers.

A router gives each prompt a score (higher: the large model is more needed). Sending the top-k prompts by
score to the large model and the rest to the small one gives one point per k: the share of large-model
calls (the cost) and the mean quality. PGR(k) = (quality - always-small) / (always-large - always-small),
the performance gap recovered; APGR is its area over the share of large calls in [0, 1] (random mixing at
equal cost is the diagonal: APGR 0.5). CPT(x) is the smallest share of large calls whose PGR reaches x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Curve:
    name: str
    share_large: Floats
    quality: Floats
    pgr: Floats

    @property
    def apgr(self) -> float:
        return float(np.sum((self.pgr[1:] + self.pgr[:-1]) / 2 * np.diff(self.share_large)))

    def cpt(self, target: float) -> float:
        """The smallest share of large-model calls whose PGR reaches `target` (1.0 when none does sooner)."""
        hit = np.flatnonzero(self.pgr >= target - 1e-12)
        return float(self.share_large[hit[0]]) if len(hit) else 1.0

    def at(self, share: float) -> tuple[float, float]:
        """(quality, PGR) with at most `share` of calls to the large model."""
        i = int(np.searchsorted(self.share_large, share + 1e-12, side="right")) - 1
        return float(self.quality[i]), float(self.pgr[i])


def router_curve(name: str, score: Floats, small: Floats, large: Floats) -> Curve:
    """The curve of routing the highest-scored prompts to the large model first. Prompts with equal scores
    are one choice for the router: within a tie it takes the expected value of a random order (a straight
    line across the tie), so a constant score is exactly random mixing and file order never helps."""
    n = len(score)
    order = np.argsort(-score, kind="stable")
    gained = np.concatenate([[0.0], np.cumsum(large[order] - small[order])])
    ranked = score[order]
    starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
    ends = np.concatenate([starts[1:], [n]])
    for a, b in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        gained[a:b + 1] = np.linspace(gained[a], gained[b], b - a + 1)
    quality = (small.sum() + gained) / n
    return Curve(name, np.arange(n + 1) / n, quality, _pgr(quality, small, large))


def random_curve(small: Floats, large: Floats) -> Curve:
    """Random mixing at equal cost: the expected quality of sending a random share to the large model."""
    n = len(small)
    share = np.arange(n + 1) / n
    quality = small.mean() + share * (large.mean() - small.mean())
    return Curve("random mix", share, quality, _pgr(quality, small, large))


def _pgr(quality: Floats, small: Floats, large: Floats) -> Floats:
    gap = large.mean() - small.mean()
    if abs(gap) < 1e-12:
        return np.zeros_like(quality)
    return (quality - small.mean()) / gap
