#!/usr/bin/env python3
"""Rebuild src/aigrid/rightsize/quality_estimator.npz from ../shared/data/model-routing.

Three boosted regression tree ensembles (scikit-learn's HistGradientBoostingRegressor, squared error, depth
3) over aigrid.rightsize.features of the MMLU, GSM8K and MT-Bench train + validation splits: the mid-size
model's quality, the large model's, and the large one's gain (their difference). The features: the static
MiniLM vector, text statistics, and (stacked) the logit of a logistic regression on hashed n-grams trained
for the gain (ngram_score.py); the trees are always trained on out-of-fold n-gram logits, so they learn how
far to trust the n-grams on prompts they have not seen. The three benchmarks differ in size by a factor of
100; each row is weighted by (largest benchmark's rows / its benchmark's rows) ^ alpha.

Choices are made by 5-fold cross-validation inside train + validation, folds grouped like the held-out split
(by MMLU subject, by MT-Bench question, by GSM8K prompt; nested for the n-gram logit): with or without the
n-gram logit, alpha and the number of boosting rounds maximise the mean over the three benchmarks of the gain
head's out-of-fold APGR. The operating table (quality target -> threshold) is measured on those out-of-fold
scores: per threshold, the share of large calls with each benchmark weighted equally, and the quality lost on
the benchmark where it is worst. Everything is then refitted on all of train + validation. The test
split (aigrid.rightsize.routing_data.split_of) is never read.
Needs the `train` extra (scikit-learn). About 10-20 minutes on this shared 2-core machine.
  python scripts/train_quality_estimator.py [--data ../shared/data/model-routing] [--out PATH]
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

from aigrid.rightsize.curve import router_curve
from aigrid.rightsize.estimator import ARTEFACT, HEADS, OperatingTable, QualityEstimator
from aigrid.rightsize.features import DENSE_NAMES, HASH_BITS, dense_features, hashed_ngrams
from aigrid.rightsize.ngram_score import NgramScore
from aigrid.rightsize.routing_data import RoutingData, read_routing_csv, split_mask
from aigrid.rightsize.static_embedding import StaticEmbedding
from aigrid.rightsize.tree_ensemble import TreeEnsemble

FILES = {"mmlu": "mmlu_mixtral_vs_gpt4.csv", "gsm8k": "gsm8k_mixtral_vs_gpt4.csv",
         "mt_bench": "mt_bench_mixtral_vs_gpt4.csv"}
ALPHAS = (0.5, 1.0)
ROUNDS = (100, 200, 300)
FOLDS = 5
NGRAM_C = 0.03
"""The n-gram regression's regularisation: the value the earlier n-gram-only estimate chose on validation."""


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


def booster(rounds: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=rounds, learning_rate=0.05, max_depth=3, min_samples_leaf=40,
                                         l2_regularization=1.0, early_stopping=False, random_state=0)


def source_weights(source: np.ndarray, alpha: float) -> np.ndarray:
    names, counts = np.unique(source, return_counts=True)
    per = {n: (counts.max() / c) ** alpha for n, c in zip(names, counts, strict=True)}
    return np.array([per[s] for s in source])


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
                                                               "plain (without)")
    ap.add_argument("--alphas", default=",".join(map(str, ALPHAS)))
    args = ap.parse_args()
    parts, sources = [], []
    for name, file in FILES.items():
        d = read_routing_csv(args.data / file)
        d = d.subset(~split_mask(d, "test"))
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
    if "ngram" in variants:
        for f in range(FOLDS):
            tr = fold != f
            col = out_of_fold_logits(xs, gain, fold, tr)
            col[~tr] = ngram_logits(xs[~tr], ngram_fit(xs[tr], gain[tr]))
            ngram_col[f] = col
        print(f"nested n-gram logits: {time.perf_counter() - t:.0f} s", flush=True)
    best: tuple[float, str, float, int] = (-np.inf, variants[0], ALPHAS[0], ROUNDS[0])
    oof_best: np.ndarray | None = None
    for variant in variants:
        for alpha in map(float, args.alphas.split(",")):
            w = source_weights(source, alpha)
            oof = np.zeros((len(ROUNDS), len(data)))
            for f in range(FOLDS):
                tr, te = fold != f, fold == f
                x = np.column_stack([base, ngram_col[f]]) if variant == "ngram" else base
                model = booster(max(ROUNDS)).fit(x[tr], gain[tr], sample_weight=w[tr])
                for i, pred in enumerate(model.staged_predict(x[te])):
                    if i + 1 in ROUNDS:
                        oof[ROUNDS.index(i + 1), te] = pred
            for r, rounds in enumerate(ROUNDS):
                apgr = {n: router_curve(n, oof[r, source == n], data.small[source == n], data.large[source == n]).apgr
                        for n in FILES}
                mean = float(np.mean(list(apgr.values())))
                print(f"{variant} alpha={alpha} rounds={rounds}: out-of-fold APGR "
                      + ", ".join(f"{n} {v:.3f}" for n, v in apgr.items()) + f"; mean {mean:.3f}", flush=True)
                if mean > best[0]:
                    best, oof_best = (mean, variant, alpha, rounds), oof[r]
    _, variant, alpha, rounds = best
    assert oof_best is not None
    table = operating_table(oof_best, data, source)
    w = source_weights(source, alpha)
    ngram = ngram_fit(xs, gain)
    if variant == "ngram":
        x = np.column_stack([base, out_of_fold_logits(xs, gain, fold, np.ones(len(data), bool))])
    else:  # the n-gram logit is still computed at run time; a constant column the trees never split on
        ngram = NgramScore(np.zeros(1 << HASH_BITS, np.float32), np.zeros(len(DENSE_NAMES), np.float32), 0.0)
        x = np.column_stack([base, np.zeros(len(data))])
    heads = {h: TreeEnsemble.from_sklearn(booster(rounds).fit(x, targets[h], sample_weight=w)) for h in HEADS}
    meta = {"variant": variant, "alpha": str(alpha), "rounds": str(rounds), "rows": str(len(data)),
            "cv_apgr_mean": f"{best[0]:.4f}",
            "trained_on": "model-routing MMLU+GSM8K+MT-Bench train+validation splits",
            "small_reference": data.small_name, "large_reference": data.large_name}
    QualityEstimator(embedding, ngram, heads, meta, table).save(args.out)
    print(f"chose {variant}, alpha={alpha}, {rounds} rounds (cross-validated mean APGR {best[0]:.3f}); wrote {args.out} "
          f"({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
