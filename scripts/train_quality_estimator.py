#!/usr/bin/env python3
"""Rebuild src/aigrid/rightsize/quality_estimator.npz from ../shared/data/model-routing.

Three boosted regression tree ensembles (scikit-learn's HistGradientBoostingRegressor, squared error, depth
3) over aigrid.rightsize.features of the MMLU, GSM8K and MT-Bench train + validation splits: the mid-size
model's quality, the large model's, and the large one's gain (their difference). The features: the static
MiniLM vector, text statistics, and (stacked) the logit of a logistic regression on hashed n-grams trained
for the gain (ngram_score.py); the trees are always trained on out-of-fold n-gram logits, so they learn how
far to trust the n-grams on prompts they have not seen. Optionally (variants `ngram+knnK`, `ngram+sw`) a
neighbour score is stacked the same way: the large model's win share among the K training prompts most
similar to the prompt (cosine of the static vectors), or RouteLLM's similarity-weighted share over all of them
(sw_ranking.NeighbourScore); nested inside every fold like the n-gram logit, shipped with its labelled
vector table when chosen. The same neighbour score may instead (or also) be blended into the router's gain,
by value (`raw`): gain = (1 - b) x the gain head + b x (2 x win share - 1), or by rank (`rank`): the same blend
of each estimate's rank among the training prompts' out-of-fold values (estimator.RankBlend; in the
cross-validation each fold's ranks are taken among the other folds' values), mapped back to the gain scale.
The three benchmarks differ in size by a factor of 100; each row is weighted by (largest benchmark's rows /
its benchmark's rows) ^ alpha.

Choices are made by 5-fold cross-validation inside train + validation, folds grouped like the held-out split
(by MMLU subject, by MT-Bench question, by GSM8K prompt; nested for the n-gram logit and the neighbour
score): the variant (with or without the n-gram logit, with or without a neighbour score), alpha and the number of boosting rounds maximise the mean over the three benchmarks of the gain
head's out-of-fold APGR; then the blend (by value or rank, K, b) maximises it again, among the blends that lower
no benchmark's APGR against the trees alone. The operating table (quality target -> threshold) is measured on those out-of-fold
scores: per threshold, the share of large calls with each benchmark weighted equally, and the quality lost on
the benchmark where it is worst. Everything is then refitted on all of train + validation. The test
split (aigrid.rightsize.routing_data.split_of) is never read.
Needs the `train` extra (scikit-learn). About 10-25 minutes on this shared 2-core machine.
With --turn-context, MT-Bench's second turns are read after their first (routing_data.with_earlier_turns: the
user turns so far, as the gateway reads a conversation); tried on 2026-12-06 and not kept (docs/models.md).
  python scripts/train_quality_estimator.py [--data ../shared/data/model-routing] [--out PATH] [--turn-context]
"""

from __future__ import annotations

import argparse
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from aigrid.rightsize.curve import router_curve
from aigrid.rightsize.estimator import (
    ARTEFACT,
    HEADS,
    MonotoneMap,
    OperatingTable,
    QualityEstimator,
    RankBlend,
)
from aigrid.rightsize.features import DENSE_NAMES, HASH_BITS, dense_features, hashed_ngrams
from aigrid.rightsize.judged_prior import JudgedPrior
from aigrid.rightsize.ngram_score import NgramScore
from aigrid.rightsize.routing_data import RoutingData, read_routing_csv, split_mask, with_earlier_turns
from aigrid.rightsize.static_embedding import StaticEmbedding
from aigrid.rightsize.sw_ranking import NeighbourScore, outcomes, quantize
from aigrid.rightsize.tree_ensemble import TreeEnsemble

FILES = {"mmlu": "mmlu_mixtral_vs_gpt4.csv", "gsm8k": "gsm8k_mixtral_vs_gpt4.csv",
         "mt_bench": "mt_bench_mixtral_vs_gpt4.csv"}
ALPHAS = (0.5, 1.0)
ROUNDS = (100, 200, 300)
BLEND_KS = (50, 100, 200, 400)
BLENDS = (0.2, 0.3, 0.4, 0.5)
COMBINES = ("raw", "rank")
FOLDS = 5
NGRAM_C = 0.03
"""The n-gram regression's regularisation: the value the earlier n-gram-only estimate chose on validation."""
JUDGED_PRIOR = "0.5:5:0.9"
"""The prior of MT-Bench-like prompts: share, k nearest MT-Bench training prompts, gate threshold
(scripts/cv_mt_bench_splits.py's rule chose it over 200 held-out question draws; docs/models.md)."""
GATE_C = 1.0
"""The judged prior's gate regularisation (not tuned)."""
BLAS_THREADS = 1
"""The trainer's BLAS products and the logistic regressions (n-gram score, gate; also where other scripts fit them)
run on one BLAS thread: their results differ in the last bits with the number of threads that sum a product (the
gate's weights by up to 2e-4, the operating table's shares by 1e-15, on this 2-core machine), so on another machine,
or with another OMP_NUM_THREADS, the same command would not rebuild the shipped artefact array for array."""


def ngram_matrix(prompts: list[str]) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    width = 1 << HASH_BITS
    for i, p in enumerate(prompts):
        idx, val = hashed_ngrams(p)
        dense = dense_features(p)
        rows.extend([i] * (len(idx) + len(dense)))
        cols.extend(idx.tolist() + list(range(width, width + len(dense))))
        vals.extend(val.tolist() + dense.tolist())
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(prompts), width + len(DENSE_NAMES)))


def ngram_fit(xs: sparse.csr_matrix, gain: np.ndarray) -> NgramScore:
    """Logistic regression on soft labels (1 + gain) / 2: each row twice, weighted by the label and its
    complement; weights rounded to float16 as they are shipped."""
    soft = (1 + gain) / 2
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        model = LogisticRegression(C=NGRAM_C, max_iter=2000).fit(
            sparse.vstack([xs, xs]).tocsr(), np.concatenate([np.ones(len(soft)), np.zeros(len(soft))]),
            sample_weight=np.concatenate([soft, 1 - soft]))
    coef = model.coef_[0].astype(np.float16).astype(np.float32)
    width = 1 << HASH_BITS
    return NgramScore(coef[:width], coef[width:], float(model.intercept_[0]))


def ngram_logits(xs: sparse.csr_matrix, score: NgramScore) -> np.ndarray:
    return xs @ np.concatenate([score.weights, score.dense_weights]) + score.bias


def out_of_fold_logits(xs: sparse.csr_matrix, gain: np.ndarray, fold: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For `rows` (a boolean mask), each row's n-gram logit from a fit on the other folds among `rows`."""
    out = np.zeros(len(gain))
    for g in np.unique(fold[rows]):
        fit_rows, score_rows = rows & (fold != g), rows & (fold == g)
        out[score_rows] = ngram_logits(xs[score_rows], ngram_fit(xs[fit_rows], gain[fit_rows]))
    return out


def neighbour_k(variant: str) -> int | None:
    """`ngram+knn50` -> 50, `ngram+sw` -> 0 (RouteLLM's SW weights), no neighbour score -> None."""
    if "+" not in variant:
        return None
    extra = variant.split("+", 1)[1]
    if extra == "sw":
        return 0
    if extra.startswith("knn") and extra[3:].isdigit():
        return int(extra[3:])
    raise SystemExit(f"unknown variant {variant!r}: ngram, plain, ngram+knnK or ngram+sw")


def out_of_fold_neighbours(vectors: np.ndarray, won: np.ndarray, k: int, fold: np.ndarray,
                           rows: np.ndarray) -> np.ndarray:
    """For `rows` (a boolean mask), each row's neighbour score from the labelled rows of the other folds among
    `rows` (never its own label, nor its MMLU subject's or MT-Bench question's)."""
    out = np.zeros(len(won))
    for g in np.unique(fold[rows]):
        fit_rows, score_rows = rows & (fold != g), rows & (fold == g)
        out[score_rows] = NeighbourScore(quantize(vectors[fit_rows]), won[fit_rows], k).scores(vectors[score_rows])
    return out


def booster(rounds: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=rounds, learning_rate=0.05, max_depth=3, min_samples_leaf=40,
                                         l2_regularization=1.0, early_stopping=False, random_state=0)


def source_weights(source: np.ndarray, alpha: float) -> np.ndarray:
    names, counts = np.unique(source, return_counts=True)
    per = {n: (counts.max() / c) ** alpha for n, c in zip(names, counts, strict=True)}
    return np.array([per[s] for s in source])


def fit_gate(features: np.ndarray, is_mt: np.ndarray) -> tuple[np.ndarray, float]:
    """The judged prior's gate (judged_prior.py): a class-balanced logistic regression of MT-Bench-or-not on the
    static vector and the text statistics; (weights, bias)."""
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        model = LogisticRegression(C=GATE_C, max_iter=3000, class_weight="balanced").fit(features, is_mt)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def judged_prior(gains: np.ndarray, data: RoutingData, base: np.ndarray, vectors: np.ndarray, source: np.ndarray,
                 fold: np.ndarray, share: float, k: int, threshold: float
                 ) -> tuple[np.ndarray, dict[str, float], JudgedPrior]:
    """The out-of-fold router gains with the prior of MT-Bench-like prompts (gate and MT-Bench table fitted on
    the other folds), their APGR per benchmark, and the prior fitted on all the training rows."""
    is_mt = source == "mt_bench"
    gain = data.large - data.small
    width = vectors.shape[1] + len(DENSE_NAMES)

    def fit(rows: np.ndarray) -> JudgedPrior:
        w, b = fit_gate(base[rows, :width], is_mt[rows].astype(int))
        table = rows & is_mt
        return JudgedPrior(w, b, threshold, quantize(vectors[table]), gain[table].astype(np.float32), k, share)

    out = gains.copy()
    for f in range(FOLDS):
        te = fold == f
        out[te] = fit(~te).adjust(gains[te], base[te], vectors[te])
    return out, per_benchmark_apgr(out, data, source), fit(np.ones(len(gain), bool))


def cv_meta(before_prior: float, apgr: dict[str, float], judged: str) -> dict[str, str]:
    """The artefact's cross-validation entries: `cv_apgr_mean`, the mean over the benchmarks of the shipped router's
    out-of-fold APGR (with the judged prior when it ships one, `apgr`), and then `cv_apgr_mean_before_judged_prior`,
    the trees and blend alone (`before_prior`), the figure the choice of trees and blend maximised."""
    if judged == "none":
        return {"cv_apgr_mean": f"{before_prior:.4f}", "judged_prior": judged}
    return {"cv_apgr_mean": f"{np.mean(list(apgr.values())):.4f}",
            "cv_apgr_mean_before_judged_prior": f"{before_prior:.4f}", "judged_prior": judged}


def fold_ranks(values: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each row's rank (a midrank share, as RankBlend's) among the out-of-fold values of the other folds."""
    out = np.zeros(len(values))
    for g in np.unique(fold):
        out[fold == g] = MonotoneMap.cdf(values[fold != g]).apply(values[fold == g])
    return out


def rank_blend(head: np.ndarray, near_gain: np.ndarray, b: float) -> tuple[RankBlend, np.ndarray]:
    """The shipped RankBlend, from the out-of-fold gain head and neighbour gain of all training rows, and its
    gains for those rows (what the operating table is measured on)."""
    fh, fn = MonotoneMap.cdf(head), MonotoneMap.cdf(near_gain)
    r = (1 - b) * fh.apply(head) + b * fn.apply(near_gain)
    out = MonotoneMap.quantile_match(r, (1 - b) * head + b * near_gain)
    return RankBlend(fh, fn, out), out.apply(r)


def per_benchmark_apgr(score: np.ndarray, data: RoutingData, source: np.ndarray) -> dict[str, float]:
    return {n: router_curve(n, score[source == n], data.small[source == n], data.large[source == n]).apgr
            for n in FILES}


def describe(apgr: dict[str, float]) -> str:
    return ", ".join(f"{n} {v:.3f}" for n, v in apgr.items()) + f"; mean {np.mean(list(apgr.values())):.3f}"


def operating_table(gain: np.ndarray, data: RoutingData, source: np.ndarray) -> OperatingTable:
    """Per threshold tau (send large when gain > tau): the share of large calls (every benchmark weighted
    equally) and the relative quality drop against always-large on the benchmark where it is worst, so a
    quality target holds on each kind of training traffic, not only on their average."""
    w = source_weights(source, 1.0)
    w = w / w.sum()
    tau = np.unique(np.concatenate([[-1.0, 1.0], np.quantile(gain, np.linspace(0, 1, 401))]))
    share = np.array([w @ (gain > t) for t in tau])
    drops = []
    for name in np.unique(source):
        k = source == name
        quality = np.array([np.mean(np.where(gain[k] > t, data.large[k], data.small[k])) for t in tau])
        drops.append((data.large[k].mean() - quality) / data.large[k].mean())
    return OperatingTable(tau, share, np.max(drops, axis=0))


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/aigrid/rightsize" / ARTEFACT)
    ap.add_argument("--variants", default="ngram,plain", help="comma-separated: ngram (with the n-gram logit), "
                    "plain (without), ngram+knnK (and the win share of the K most similar training prompts), "
                    "ngram+sw (and RouteLLM's similarity-weighted win share)")
    ap.add_argument("--alphas", default=",".join(map(str, ALPHAS)))
    ap.add_argument("--blend-ks", default=",".join(map(str, BLEND_KS)), help="neighbour counts K tried in the "
                    "blend (empty: no blend)")
    ap.add_argument("--blends", default=",".join(map(str, BLENDS)), help="blend weights b tried")
    ap.add_argument("--combines", default=",".join(COMBINES), help="how the blend combines the two estimates: raw "
                    "(their values), rank (their ranks among the training prompts' out-of-fold values)")
    ap.add_argument("--judged-prior", default=JUDGED_PRIOR, help="share:k:threshold of the prior of MT-Bench-like "
                    "prompts (judged_prior.py; chosen by scripts/cv_mt_bench_splits.py), or none")
    ap.add_argument("--turn-context", action="store_true", help="read MT-Bench's second turns after their first "
                    "(the user turns of the conversation so far, as the gateway reads a conversation)")
    args = ap.parse_args()
    parts, sources = [], []
    for name, file in FILES.items():
        d = read_routing_csv(args.data / file)
        d = d.subset(~split_mask(d, "test"))
        if args.turn_context:
            d = with_earlier_turns(d)
        parts.append(d)
        sources += [name] * len(d)
    data = RoutingData([p for d in parts for p in d.prompts], [g for d in parts for g in d.groups],
                       np.concatenate([d.small for d in parts]), np.concatenate([d.large for d in parts]),
                       parts[0].small_name, parts[0].large_name)
    source = np.array(sources)
    print("train + validation: " + ", ".join(f"{n} {np.sum(source == n)}" for n in FILES) + " (test split not read)")
    embedding = StaticEmbedding.load()
    t = time.perf_counter()
    base = np.stack([np.concatenate([embedding.vector(p), dense_features(p)]) for p in data.prompts])
    xs = ngram_matrix(data.prompts)
    print(f"features: {time.perf_counter() - t:.1f} s", flush=True)
    targets = {"small": data.small, "large": data.large, "gain": data.large - data.small}
    gain = targets["gain"]
    fold = np.array([zlib.crc32(f"cv:{s}:{g or p}".encode()) % FOLDS
                     for s, g, p in zip(source, data.groups, data.prompts, strict=True)])
    variants = args.variants.split(",")
    # per outer fold: the n-gram logit column, out of fold for the training rows, from the training rows for the rest
    ngram_col = {}
    if any(v.startswith("ngram") for v in variants):
        for f in range(FOLDS):
            tr = fold != f
            col = out_of_fold_logits(xs, gain, fold, tr)
            col[~tr] = ngram_logits(xs[~tr], ngram_fit(xs[tr], gain[tr]))
            ngram_col[f] = col
        print(f"nested n-gram logits: {time.perf_counter() - t:.0f} s", flush=True)
    vectors = base[:, :embedding.dimensions].astype(np.float32)
    won = outcomes(data.small, data.large).astype(np.float32)
    # per k and outer fold: the neighbour score column, nested like the n-gram logit
    nb_col: dict[int, dict[int, np.ndarray]] = {}
    blend_ks = [int(v) for v in args.blend_ks.split(",") if v]
    for k in ({neighbour_k(v) for v in variants} | set(blend_ks)) - {None}:
        assert k is not None
        nb_col[k] = {}
        for f in range(FOLDS):
            tr = fold != f
            col = out_of_fold_neighbours(vectors, won, k, fold, tr)
            col[~tr] = NeighbourScore(quantize(vectors[tr]), won[tr], k).scores(vectors[~tr])
            nb_col[k][f] = col
        print(f"nested neighbour scores (k = {k}): {time.perf_counter() - t:.0f} s", flush=True)
    candidates = []  # (mean APGR, per-benchmark APGR, variant, alpha, rounds, out-of-fold gains)
    for variant in variants:
        for alpha in map(float, args.alphas.split(",")):
            w = source_weights(source, alpha)
            oof = np.zeros((len(ROUNDS), len(data)))
            for f in range(FOLDS):
                tr, te = fold != f, fold == f
                k = neighbour_k(variant)
                x = base if variant == "plain" else np.column_stack(
                    [base, ngram_col[f]] + ([] if k is None else [nb_col[k][f]]))
                model = booster(max(ROUNDS)).fit(x[tr], gain[tr], sample_weight=w[tr])
                for i, pred in enumerate(model.staged_predict(x[te])):
                    if i + 1 in ROUNDS:
                        oof[ROUNDS.index(i + 1), te] = pred
            for r, rounds in enumerate(ROUNDS):
                apgr = per_benchmark_apgr(oof[r], data, source)
                candidates.append((float(np.mean(list(apgr.values()))), apgr, variant, alpha, rounds, oof[r]))
                print(f"{variant} alpha={alpha} rounds={rounds}: out-of-fold APGR {describe(apgr)}", flush=True)
    first = max((c for c in candidates if c[2] == variants[0]), key=lambda c: c[0])
    mean, apgr, variant, alpha, rounds, oof_best = max(
        (c for c in candidates if all(c[1][n] >= first[1][n] for n in FILES)), key=lambda c: c[0])
    print(f"trees: {variant}, alpha={alpha}, {rounds} rounds: {describe(apgr)}", flush=True)
    k = neighbour_k(variant)
    blend, blend_k, combine, chosen = 0.0, k, "raw", None
    head_ranks = fold_ranks(oof_best, fold)
    for bk in [b for b in blend_ks if k is None or b == k]:
        near = np.zeros(len(data))
        for f in range(FOLDS):
            near[fold == f] = nb_col[bk][f][fold == f]
        near_ranks = fold_ranks(2 * near - 1, fold)
        for how in args.combines.split(","):
            for b in map(float, args.blends.split(",")):
                if how == "raw":
                    mixed = (1 - b) * oof_best + b * (2 * near - 1)
                elif how == "rank":
                    mixed = (1 - b) * head_ranks + b * near_ranks
                else:
                    raise SystemExit(f"unknown combine {how!r}: raw or rank")
                a = per_benchmark_apgr(mixed, data, source)
                m = float(np.mean(list(a.values())))
                steady = all(a[n] >= apgr[n] for n in FILES)
                print(f"blend {how} K={bk} b={b}: out-of-fold APGR {describe(a)}"
                      f"{'' if steady else ' (a benchmark falls)'}", flush=True)
                if steady and m > mean:
                    chosen = (m, a, b, bk, how, near)
                    mean, blend, blend_k, combine = m, b, bk, how
    ranks = None
    if chosen is not None:
        _, apgr, _, _, _, near = chosen
        if combine == "rank":
            ranks, oof_best = rank_blend(oof_best, 2 * near - 1, blend)
        else:
            oof_best = (1 - blend) * oof_best + blend * (2 * near - 1)
    best = (mean, variant, alpha, rounds)
    judged = None
    if args.judged_prior != "none":
        share, jk, threshold = (float(v) for v in args.judged_prior.split(":"))
        oof_best, apgr, judged = judged_prior(oof_best, data, base, vectors, source, fold, share, int(jk), threshold)
        print(f"judged prior {args.judged_prior}: out-of-fold APGR {describe(apgr)}", flush=True)
    table = operating_table(oof_best, data, source)
    w = source_weights(source, alpha)
    ngram = ngram_fit(xs, gain)
    everything = np.ones(len(data), bool)
    neighbours = None if blend_k is None else NeighbourScore(quantize(vectors), won, blend_k)
    if variant.startswith("ngram"):
        x = np.column_stack([base, out_of_fold_logits(xs, gain, fold, everything)]
                            + ([] if k is None else [out_of_fold_neighbours(vectors, won, k, fold, everything)]))
    else:  # the n-gram logit is still computed at run time; a constant column the trees never split on
        ngram = NgramScore(np.zeros(1 << HASH_BITS, np.float32), np.zeros(len(DENSE_NAMES), np.float32), 0.0)
        x = np.column_stack([base, np.zeros(len(data))])
    heads = {h: TreeEnsemble.from_sklearn(booster(rounds).fit(x, targets[h], sample_weight=w)) for h in HEADS}
    meta = {"variant": variant, "neighbours": "none" if blend_k is None else str(blend_k), "blend": str(blend),
            "combine": combine,
            "alpha": str(alpha), "rounds": str(rounds), "rows": str(len(data)),
            "turn_context": str(args.turn_context),
            "trained_on": "model-routing MMLU+GSM8K+MT-Bench train+validation splits",
            "small_reference": data.small_name, "large_reference": data.large_name}
    meta.update(cv_meta(best[0], apgr, args.judged_prior))
    QualityEstimator(embedding, ngram, heads, meta, table, neighbours, k is not None, blend, ranks,
                     judged).save(args.out)
    print(f"chose {variant}, alpha={alpha}, {rounds} rounds, blend {blend} ({combine}) with K={blend_k} "
          f"(cross-validated "
          f"APGR {describe(apgr)}); wrote {args.out} "
          f"({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    with threadpool_limits(BLAS_THREADS, user_api="blas"):  # every product too (the operating table's shares)
        main()
