"""scripts/train_quality_estimator.py: the prior of MT-Bench-like prompts, measured out of fold and fitted whole
(docs/models.md, "MT-Bench over many held-out question draws")."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the trainer needs the `train` extra

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("train_quality_estimator_under_test",
                                              ROOT / "scripts" / "train_quality_estimator.py")
assert spec and spec.loader
tq = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = tq
spec.loader.exec_module(tq)


def test_the_judged_prior_moves_mt_bench_like_prompts_toward_their_kin_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    n_other, n_mt = 200, 60
    n = n_other + n_mt
    vectors = rng.normal(size=(n, 64))
    vectors[n_other:n_other + 30, 0] += 8.0  # two kinds of MT-Bench prompt, far apart
    vectors[n_other + 30:, 1] += 8.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = np.zeros((n, 7))
    dense[:n_other, 4] = 1.0  # the others have multiple-choice options: the gate can tell them apart
    base = np.column_stack([vectors, dense])
    source = np.array(["mmlu"] * 100 + ["gsm8k"] * 100 + ["mt_bench"] * n_mt)
    small = np.full(n, 0.5)
    large = small.copy()
    large[:n_other:2] = 1.0
    large[n_other:n_other + 30] = 1.0  # the first kind: the large model adds 0.5; the second: nothing
    data = tq.RoutingData([""] * n, [""] * n, small, large, "s", "l")
    fold = np.arange(n) % 5
    gains = np.zeros(n)
    out, apgr, prior = tq.judged_prior(gains, data, base, vectors.astype(np.float32), source, fold, 0.5, 5, 0.9)
    assert np.array_equal(out[:n_other], gains[:n_other])  # not MT-Bench-like: left as it was
    assert out[n_other:n_other + 30] == pytest.approx(0.25)  # half way to its kin's 0.5, from the other folds
    assert out[n_other + 30:] == pytest.approx(0.0)
    assert apgr["mmlu"] == pytest.approx(0.5) and apgr["gsm8k"] == pytest.approx(0.5)  # all ties: random mixing
    assert apgr["mt_bench"] == pytest.approx(0.75)  # the kind that gains first: the oracle order
    assert prior.k == 5 and prior.share == 0.5 and len(prior.gains) == n_mt  # fitted on every MT-Bench row
