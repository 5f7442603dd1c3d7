"""`aigrid models eval`: aigrid's router against the baselines on one model-routing CSV.

Routers compared on the same prompts: aigrid (the shipped estimate's expected gain of the large model), always-small,
always-large, random mixing at equal cost, the similarity-weighted ranking baseline (sw_ranking.py) and
the oracle (the labels themselves: an upper bound no router reaches).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from aigrid.rightsize.curve import Curve, random_curve, router_curve
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.routing_data import RoutingData
from aigrid.rightsize.sw_ranking import outcomes, sw_crossfit_scores, sw_scores

T = TypeVar("T")
SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SAME_PROMPT = 0.99
"""Cosine of the static vectors at or above which a prompt counts as one of the estimate's training prompts:
every shipped training prompt is at 0.992 or more against the neighbour table (its int8 rounding); 4 of the
4,486 prompts of the held-out test splits are at 0.99 or more (near-repeats of training prompts)."""
Progress = Callable[[str, int, int], None]
"""Called as (what is being done, prompts done, prompts in all) while a long step runs."""


@dataclass(frozen=True)
class Evaluation:
    data: RoutingData
    curves: tuple[Curve, ...]
    estimate_ms: float
    """Mean wall time of one estimate (features + dot product) over this file, in milliseconds."""
    near_training: int = 0
    """Prompts (nearly) identical to one the estimate was trained on (its neighbour table): on those its figures
    are not held-out."""

    def curve(self, name: str) -> Curve:
        return next(c for c in self.curves if c.name == name)

    @property
    def gap(self) -> float:
        """Always-large's mean quality minus always-small's: what a router can recover."""
        return float(self.data.large.mean() - self.data.small.mean())

    @property
    def has_gap(self) -> bool:
        """Whether the large model is better on the mean: else PGR divides by zero (or by a negative gap, where a
        higher APGR is a worse router) and APGR and the 50% / 80% shares are undefined."""
        return self.gap > 1e-12


def _each(what: str, prompts: Sequence[str], f: Callable[[str], T], progress: Progress | None) -> list[T]:
    out: list[T] = []
    step = max(len(prompts) // 100, 1)
    for i, p in enumerate(prompts):
        if progress is not None and i % step == 0:
            progress(what, i, len(prompts))
        out.append(f(p))
    if progress is not None:
        progress(what, len(prompts), len(prompts))
    return out


def embed(prompts: Sequence[str], estimator: QualityEstimator, what: str = "embedding",
          progress: Progress | None = None) -> npt.NDArray[np.float32]:
    """The SW baseline's unit vectors (sw_ranking.embed), with progress."""
    vectors = _each(what, prompts, estimator.embedding.vector, progress)
    return np.stack(vectors) if vectors else np.zeros((0, estimator.embedding.dimensions), np.float32)


def evaluate(data: RoutingData, estimator: QualityEstimator, *, reference: RoutingData | None = None,
             crossfit: bool = False, seed: int = 0, progress: Progress | None = None,
             reference_vectors: npt.NDArray[np.float32] | None = None) -> Evaluation:
    """Curves of every router on `data`. `reference`: the SW baseline's labelled prompts (None: no SW
    baseline), `reference_vectors` their embed() when already made (several files against one reference);
    `crossfit`: also the SW baseline on the file's own labels (sw_ranking.py says why)."""
    t = time.perf_counter()
    est = _each("estimating", data.prompts, estimator.estimate, progress)
    per_ms = (time.perf_counter() - t) / max(len(data), 1) * 1000
    small, large = data.small, data.large
    curves = [router_curve("aigrid", np.array([e.gain for e in est]), small, large), random_curve(small, large)]
    trained = estimator.neighbours
    near = 0
    if reference is not None or crossfit or trained is not None:
        vectors = embed(data.prompts, estimator, "embedding the prompts", progress)
    if trained is not None:
        near = sum(int(np.sum(np.max(vectors[i:i + 512] @ trained.table.T, axis=1) >= SAME_PROMPT))
                   for i in range(0, len(vectors), 512)) if len(trained.table) else 0
    if reference is not None:
        ref = reference_vectors if reference_vectors is not None else \
            embed(reference.prompts, estimator, "sw-ranking: embedding its reference prompts", progress)
        curves.append(router_curve("sw-ranking", sw_scores(vectors, ref, outcomes(reference.small, reference.large)),
                                   small, large))
    if crossfit:
        curves.append(router_curve("sw-ranking (in-file labels)", sw_crossfit_scores(vectors, small, large, seed),
                                   small, large))
    curves.append(router_curve("oracle", large - small, small, large))
    return Evaluation(data, tuple(curves), per_ms, near)


def summary_rows(ev: Evaluation) -> list[list[str]]:
    """Per router: APGR, CPT(50%), CPT(80%), and at how many of the n+1 cost levels it is below random mixing."""
    d = ev.data
    rows = [["always-small", "-", "-", "-", "-", f"{d.small.mean():.4f}"],
            ["always-large", "-", "-", "-", "-", f"{d.large.mean():.4f}"]]
    rand = ev.curve("random mix").quality
    for c in ev.curves:
        below = int(np.sum(c.quality < rand - 1e-12))
        gap = [f"{c.apgr:.3f}", f"{c.cpt(0.5):.1%}", f"{c.cpt(0.8):.1%}"] if ev.has_gap else ["n/a"] * 3
        rows.append([c.name, *gap, f"{below} of {len(rand)}" if c.name != "random mix" else "-", ""])
    return rows


def curve_rows(ev: Evaluation) -> list[list[str]]:
    """Quality at each share of large-model calls, per router."""
    return [[f"{s:.0%}"] + [f"{c.at(s)[0]:.4f}" for c in ev.curves] for s in SHARES]


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_plot(ev: Evaluation, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in ev.curves:
        ax.plot(c.share_large * 100, c.quality, label=f"{c.name} (APGR {c.apgr:.3f})" if ev.has_gap else c.name,
                linestyle="--" if c.name in ("random mix", "oracle") else "-")
    ax.set_xlabel("calls to the large model (%)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
