#!/usr/bin/env python3
"""Rebuild src/aigrid/rightsize/quality_estimator.npz from ../shared/data/model-routing.

Trains three L2-regularised logistic regressions on hashed n-grams + text statistics
(aigrid.rightsize.features) of the MMLU and GSM8K train splits: the mid-size model answers well, the large
model answers well, the large one answers better (ties as half a win each way). Each head's regularisation
is picked on the validation split (log-loss for the first two, APGR for the router's head), then all three
are refitted on train + validation and written as the artefact. The test split (aigrid.rightsize.routing_data.split_of) is never read here.
Needs the `train` extra (scikit-learn, scipy). Usage:
  python scripts/train_quality_estimator.py [--data ../shared/data/model-routing] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from aigrid.rightsize.curve import router_curve
from aigrid.rightsize.estimator import ARTEFACT, HEADS, OperatingTable, QualityEstimator
from aigrid.rightsize.features import DENSE_NAMES, HASH_BITS, dense_features, hashed_ngrams
from aigrid.rightsize.routing_data import concat, read_routing_csv, split_mask
from aigrid.rightsize.sw_ranking import outcomes

FILES = ("mmlu_mixtral_vs_gpt4.csv", "gsm8k_mixtral_vs_gpt4.csv")
C_GRID = (0.03, 0.1, 0.3)


def matrix(prompts: list[str]) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    width = 1 << HASH_BITS
    for i, p in enumerate(prompts):
        idx, val = hashed_ngrams(p)
        dense = dense_features(p)
        rows.extend([i] * (len(idx) + len(dense)))
        cols.extend(idx.tolist() + list(range(width, width + len(dense))))
        vals.extend(val.tolist() + dense.tolist())
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(prompts), width + len(DENSE_NAMES)))


def logistic(x: sparse.csr_matrix, won: np.ndarray, c: float) -> LogisticRegression:
    """A logistic regression on soft labels in [0, 1]: each row twice, weighted won and 1 - won."""
    x2 = sparse.vstack([x, x]).tocsr()
    y2 = np.concatenate([np.ones(len(won)), np.zeros(len(won))])
    return LogisticRegression(C=c, max_iter=2000).fit(x2, y2, sample_weight=np.concatenate([won, 1 - won]))


def operating_table(gain: np.ndarray, small: np.ndarray, large: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per threshold tau (send to the large model when gain > tau): the share of large calls and the relative
    quality drop against always-large, measured on the validation split with the train-only model."""
    tau = np.unique(np.concatenate([[-1.0, 1.0], np.quantile(gain, np.linspace(0, 1, 401))]))
    share = np.array([np.mean(gain > t) for t in tau])
    quality = np.array([np.mean(np.where(gain > t, large, small)) for t in tau])
    drop = (large.mean() - quality) / large.mean()
    return tau, share, drop


def head_scores(model: LogisticRegression, x: sparse.csr_matrix) -> np.ndarray:
    return model.predict_proba(x)[:, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/aigrid/rightsize" / ARTEFACT)
    args = ap.parse_args()
    train_parts, val_parts = [], []
    for name in FILES:
        data = read_routing_csv(args.data / name)
        train_parts.append(data.subset(split_mask(data, "train")))
        val_parts.append(data.subset(split_mask(data, "validation")))
    train, val = concat(train_parts), concat(val_parts)
    print(f"train {len(train)} prompts, validation {len(val)} (test split not read)")
    t = time.perf_counter()
    x_train, x_val = matrix(train.prompts), matrix(val.prompts)
    print(f"features: {time.perf_counter() - t:.1f} s", flush=True)
    targets = {"small": (train.small, val.small), "large": (train.large, val.large),
               "win": (outcomes(train.small, train.large), outcomes(val.small, val.large))}
    chosen: dict[str, float] = {}
    win_val: dict[float, np.ndarray] = {}
    for head in HEADS:
        y_train, y_val = targets[head]
        best: tuple[float, float] = (-np.inf, 0.0)
        for c in C_GRID:
            p = head_scores(logistic(x_train, y_train, c), x_val)
            if head == "win":
                win_val[c] = p
                value, what = router_curve(head, p, val.small, val.large).apgr, "APGR"
            else:
                eps = 1e-9
                value = float(np.mean(y_val * np.log(p + eps) + (1 - y_val) * np.log(1 - p + eps)))
                what = "log-likelihood"
            print(f"{head} C={c:<5} validation {what} {value:.4f}", flush=True)
            best = max(best, (value, c))
        chosen[head] = best[1]
    x_all = sparse.vstack([x_train, x_val]).tocsr()
    models = [logistic(x_all, np.concatenate(targets[h]), chosen[h]) for h in HEADS]
    coef = np.stack([m.coef_[0] for m in models], axis=1).astype(np.float32)
    width = 1 << HASH_BITS
    meta = {"C": ",".join(f"{h}={chosen[h]}" for h in HEADS), "rows": str(len(train) + len(val)),
            "trained_on": "model-routing MMLU+GSM8K train+validation splits",
            "small_reference": train.small_name, "large_reference": train.large_name}
    tau, share, drop = operating_table(2 * win_val[chosen["win"]] - 1, val.small, val.large)
    est = QualityEstimator(coef[:width], coef[width:], np.array([m.intercept_[0] for m in models], np.float32),
                           HASH_BITS, meta, OperatingTable(tau, share, drop))
    est.save(args.out)
    print(f"chose {meta['C']}; wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
