#!/usr/bin/env python3
"""Right-sizing on MT-Bench-like data, measured over many held-out question splits of the TRAINING data (issue 15).

The held-out MT-Bench split has 22 questions (44 prompt-turns): a single draw. This draws `--splits` random sets
of `--held-out` (22) of the 58 training MT-Bench questions (both turns; the test split is never read) and, per
draw, scores the held-out prompt-turns with the estimate's out-of-fold parts (the cache of
scripts/cv_right_size_levels.py: per repeat of 5 grouped folds, the gain head, the n-gram logit and the K-nearest
win shares, each prompt scored by a fit that never saw its MT-Bench question; draw d uses repeat d % repeats),
while every MT-Bench *prior* of a variant (the nearest MT-Bench prompts' gains, the category centroids) is fitted
on the draw's other 36 questions only. Per variant it prints the held-out APGR's mean, sd and 5-95% band over the
draws, the share of (draw, 10% level) cells below random mixing, the share of draws with any level below, and
the paired difference against the shipped router; and the out-of-fold APGR on MMLU, GSM8K and all 116 MT-Bench
prompts (mean over repeats; priors and the gate from the other folds), paired against the shipped router.

Variants (the router's gain g, on the shipped gain scale: the rank blend quantile-matched to the value blend):
  shipped             the rank blend, 0.5 x rank(head) + 0.5 x rank(200 nearest), as shipped until the judged
                      prior (the cached out-of-fold parts hold no prior: `knn:0.5:5:0.9` is today's artefact)
  knn:s:k[:t]         g + s x gate x (mean gain of the k nearest MT-Bench training prompts - g)
  cent:s[:t]          the same toward the mean gain of the nearest MT-Bench category centroid (8 categories)
  mean:s[:t]          the same toward the mean gain of all MT-Bench training prompts
  near:K[:t]          gated prompts take the rank blend with the K nearest instead of 200 (K: 50, 100, 400)
  cat:s               toward the prompt's own category's mean gain (its label: a ceiling, not deployable)
  turn1:s             a turn 2 takes s of its turn 1's g (needs the conversation; not what the estimate reads)
The gate is P(MT-Bench-like) from a logistic regression on the static vector and the text statistics (out of
fold, class-balanced); with t, a hard gate (1 when P >= t, else 0).
The rule, written before the first run (7 Dec 2026): a deployable variant (knn, cent) replaces the shipped router
only if, against it, (1) on the MT-Bench draws its paired mean APGR difference is above 0, it is higher in more
draws than lower, and its share of (draw, level) cells below random is lower; (2) out of fold its MMLU and GSM8K
APGR (mean over repeats, paired) are each no more than 0.003 lower (the repeat-to-repeat sd is 0.010 / 0.014);
(3) its out-of-fold MT-Bench APGR over all 116 prompt-turns is not lower. Among those, the highest mean held-out
APGR. `cat` and `turn1` are diagnostics (the category label, the conversation), not candidates.
Needs the `train` extra and the cache (or computes it: ~3 minutes per repeat on this shared machine).
  python scripts/cv_mt_bench_splits.py [--data ../shared/data/model-routing] [--repeats 3] [--splits 200]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_right_size_levels import compute, levels, load, router, stale  # noqa: E402  (scripts beside this one)
from train_quality_estimator import FILES, FOLDS, dense_features, fit_gate  # noqa: E402

from aigrid.rightsize.estimator import MonotoneMap  # noqa: E402
from aigrid.rightsize.judged_prior import nearest_mean  # noqa: E402
from aigrid.rightsize.judged_prior import shrink as judged_shrink  # noqa: E402
from aigrid.rightsize.static_embedding import StaticEmbedding  # noqa: E402

SHIPPED = "shipped"


def question_splits(questions: list[str], held_out: int, draws: int, seed: int = 0) -> list[set[str]]:
    """`draws` random sets of `held_out` distinct questions (without replacement within a draw)."""
    if not 0 < held_out < len(questions):
        raise SystemExit(f"--held-out must be between 1 and {len(questions) - 1} ({held_out} given)")
    rng = np.random.default_rng(seed)
    names = sorted(questions)
    return [set(rng.choice(names, size=held_out, replace=False).tolist()) for _ in range(draws)]


def knn_prior(query: np.ndarray, ref: np.ndarray, ref_gain: np.ndarray, k: int) -> np.ndarray:
    """Per query row, the mean gain of its k most similar reference rows (the shipped prior's nearest_mean)."""
    return nearest_mean(query, ref, ref_gain, k)


def centroid_prior(query: np.ndarray, ref: np.ndarray, ref_cat: np.ndarray, ref_gain: np.ndarray) -> np.ndarray:
    """Per query row, the mean gain of the category whose centroid (mean reference vector) is most similar."""
    cats = np.unique(ref_cat)
    cent = np.stack([ref[ref_cat == c].mean(axis=0) for c in cats])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-9)
    means = np.array([ref_gain[ref_cat == c].mean() for c in cats])
    return means[np.argmax(query @ cent.T, axis=1)]


def shrink(g: np.ndarray, prior: np.ndarray, gate: np.ndarray, s: float, hard: float | None = None) -> np.ndarray:
    """g moved a share s x gate of the way to the prior; a hard gate (P >= hard: 1, else 0) when given."""
    return judged_shrink(g, prior, gate if hard is None else (gate >= hard).astype(np.float64), s)


@dataclass
class Split:
    """What a variant may use for some rows: their shipped gain, gate, category and turn, and the MT-Bench
    rows it may learn from (vectors, gains, categories)."""

    g: np.ndarray
    gate: np.ndarray
    vectors: np.ndarray
    cat: np.ndarray
    ref_vectors: np.ndarray
    ref_gain: np.ndarray
    ref_cat: np.ndarray
    turn1: np.ndarray
    """Per row: the shipped gain of its question's turn 1 (its own where it has none)."""
    is_turn2: np.ndarray
    by_k: dict[int, np.ndarray]
    """Per neighbour count K: the rows' gain from the rank blend with the K nearest instead of 200."""


def variant_score(v: str, x: Split) -> np.ndarray:
    how, *rest = v.split(":")
    if how == SHIPPED:
        return x.g
    if how == "knn":
        hard = float(rest[2]) if len(rest) > 2 else None
        return shrink(x.g, knn_prior(x.vectors, x.ref_vectors, x.ref_gain, int(rest[1])), x.gate, float(rest[0]), hard)
    if how == "cent":
        hard = float(rest[1]) if len(rest) > 1 else None
        return shrink(x.g, centroid_prior(x.vectors, x.ref_vectors, x.ref_cat, x.ref_gain), x.gate, float(rest[0]),
                      hard)
    if how == "mean":
        hard = float(rest[1]) if len(rest) > 1 else None
        return shrink(x.g, np.full(len(x.g), x.ref_gain.mean()), x.gate, float(rest[0]), hard)
    if how == "near":
        hard = float(rest[1]) if len(rest) > 1 else None
        return shrink(x.g, x.by_k[int(rest[0])], x.gate, 1.0, hard)
    if how == "cat":
        means = {c: x.ref_gain[x.ref_cat == c].mean() for c in np.unique(x.ref_cat)}
        prior = np.array([means.get(c, 0.0) for c in x.cat])
        return shrink(x.g, prior, (x.cat != "").astype(np.float64), float(rest[0]))
    if how == "turn1":
        return np.where(x.is_turn2, (1 - float(rest[0])) * x.g + float(rest[0]) * x.turn1, x.g)
    raise SystemExit(f"unknown variant {v!r}: shipped, knn:s:k[:t], cent:s[:t], mean:s[:t], near:K[:t], cat:s, "
                     "turn1:s")


def gate_out_of_fold(features: np.ndarray, is_mt: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """P(MT-Bench-like) per row, from the trainer's gate fitted on the other folds."""
    out = np.zeros(len(is_mt))
    for f in range(FOLDS):
        w, b = fit_gate(features[fold != f], is_mt[fold != f])
        out[fold == f] = 1 / (1 + np.exp(-(features[fold == f] @ w + b)))
    return out


def shipped_gain(parts: dict[str, np.ndarray], r: int, k: int = 200) -> np.ndarray:
    """The shipped router's out-of-fold score on its gain scale (the trainer's quantile match); with `k`, the
    same blend with the k nearest."""
    ranks = router(parts, r, f"rank:0.5:{k}")
    value = 0.5 * parts["head"][r] + 0.5 * (2 * parts[f"near{k}"][r] - 1)
    return MonotoneMap.quantile_match(ranks, value).apply(ranks)


def summarise(apgr: np.ndarray, below: np.ndarray, base: np.ndarray) -> str:
    """One table row's cells: held-out APGR over the draws, below-random cells, paired difference to `base`."""
    d = apgr - base
    return (f"{apgr.mean():.3f} ({apgr.std():.3f}) | {np.quantile(apgr, 0.05):.3f}-{np.quantile(apgr, 0.95):.3f} | "
            f"{below.mean():.1%} | {np.mean(below.any(axis=1)):.0%} | {d.mean():+.4f} ({np.mean(d > 0):.0%} / "
            f"{np.mean(d < 0):.0%})")


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--held-out", type=int, default=22)
    ap.add_argument("--variants", default="shipped,knn:0.5:5:0.9,knn:0.5:10,cent:0.5,cat:0.5,turn1:0.5")
    ap.add_argument("--cache", type=Path, default=Path("out/cv_right_size_levels.npz"))
    args = ap.parse_args()
    data, source, kinds = load(args.data)
    parts: dict[str, np.ndarray] = {}
    if args.cache.exists():
        with np.load(args.cache) as z:
            parts = {k: z[k] for k in z.files}
    if stale(parts, args.repeats, len(data), False, False, False):
        parts = compute(data, source, args.repeats)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.cache, **parts, turn_context=np.array(False))
    parts = {k: v[:args.repeats] for k, v in parts.items() if k != "turn_context"}
    emb = StaticEmbedding.load()
    vectors = np.stack([emb.vector(p) for p in data.prompts]).astype(np.float64)
    features = np.column_stack([vectors, np.stack([dense_features(p) for p in data.prompts])])
    gain = data.large - data.small
    mt = source == "mt_bench"
    cat = np.array([k.split(":")[0] for k in kinds])
    turn = np.array([k.split(":")[1] if k else "" for k in kinds])
    qid = np.array([g if m else "" for g, m in zip(data.groups, mt, strict=True)])
    first = {q: i for i, (q, t) in enumerate(zip(qid, turn, strict=True)) if t == "1"}
    turn1_row = np.array([first.get(q, i) if t == "2" else i for i, (q, t) in enumerate(zip(qid, turn, strict=True))])
    variants = args.variants.split(",")
    gains = [shipped_gain(parts, r) for r in range(args.repeats)]
    by_k = [{k: shipped_gain(parts, r, k) for k in (50, 100, 400)} for r in range(args.repeats)]
    gates = [gate_out_of_fold(features, mt.astype(int), parts["fold"][r]) for r in range(args.repeats)]
    print(f"training data only (test split not read): {', '.join(f'{n} {np.sum(source == n)}' for n in FILES)}; "
          f"{args.repeats} repeats of 5 grouped folds; gate P(MT-Bench-like) out of fold: MT-Bench median "
          f"{np.median(gates[0][mt]):.3f}, GSM8K {np.median(gates[0][source == 'gsm8k']):.3f}, MMLU "
          f"{np.median(gates[0][source == 'mmlu']):.4f}", flush=True)

    def split_for(rows: np.ndarray, ref: np.ndarray, r: int) -> Split:
        return Split(gains[r][rows], gates[r][rows], vectors[rows], cat[rows], vectors[ref], gain[ref], cat[ref],
                     gains[r][turn1_row[rows]], turn[rows] == "2", {k: v[rows] for k, v in by_k[r].items()})

    # 1. held-out question draws of MT-Bench
    draws = question_splits(sorted(set(qid[mt])), args.held_out, args.splits)
    apgr = {v: np.zeros(len(draws)) for v in variants}
    below = {v: np.zeros((len(draws), 9), bool) for v in variants}
    for d, held in enumerate(draws):
        rows = mt & np.isin(qid, list(held))
        x = split_for(rows, mt & ~rows, d % args.repeats)
        for v in variants:
            a, lv = levels(variant_score(v, x), data.small[rows], data.large[rows])
            apgr[v][d], below[v][d] = a, lv < 0
    print(f"\nMT-Bench: {len(draws)} draws of {args.held_out} of the {len(set(qid[mt]))} training questions held out "
          "(priors from the other questions)\n")
    print("| variant | held-out APGR mean (sd) | 5-95% | (draw, level) cells below random | draws with a level below "
          "| paired vs shipped (higher / lower) |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        print(f"| {v} | {summarise(apgr[v], below[v], apgr[variants[0]])} |", flush=True)
    # 2. out of fold on all three benchmarks (priors and gate from the other folds)
    oof = {v: np.zeros((args.repeats, 3)) for v in variants}
    for r in range(args.repeats):
        fold = parts["fold"][r]
        scores = {v: np.zeros(len(data)) for v in variants}
        for f in range(FOLDS):
            rows = fold == f
            x = split_for(rows, mt & ~rows, r)
            for v in variants:
                scores[v][rows] = variant_score(v, x)
        for v in variants:
            oof[v][r] = [levels(scores[v][source == n], data.small[source == n], data.large[source == n])[0]
                         for n in FILES]
    print(f"\nout of fold, {args.repeats} repeats (mean; paired difference against {variants[0]})\n")
    print("| variant | MMLU | GSM8K | MT-Bench (116) |")
    print("|---|---|---|---|")
    for v in variants:
        dd = oof[v] - oof[variants[0]]
        print(f"| {v} | " + " | ".join(f"{oof[v][:, i].mean():.4f} ({dd[:, i].mean():+.4f})" for i in range(3)) + " |",
              flush=True)


if __name__ == "__main__":
    main()
