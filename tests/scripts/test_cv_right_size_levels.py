"""scripts/cv_right_size_levels.py: the per-level reading of a router's curve (PGR above random mixing at each
10% of large calls) and the routers it builds from cached out-of-fold parts (docs/models.md, "Below random at
low levels?")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the script imports the trainer's helpers (the `train` extra)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cv_right_size_levels_under_test", ROOT / "scripts" / "cv_right_size_levels.py")
assert spec and spec.loader
cv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cv)


def labels(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """20 prompts only the large model answers, 80 both answer: the gap is 0.2."""
    small = np.ones(n)
    small[:20] = 0.0
    return small, np.ones(n)


def test_levels_read_pgr_above_the_diagonal_at_each_tenth_of_large_calls() -> None:
    small, large = labels()
    oracle = large - small
    apgr, lv = cv.levels(oracle, small, large)
    # the 20 that need the large model first: PGR 0.5 at 10% of calls (share 0.1), 1.0 from 20% on
    assert lv == pytest.approx([0.4, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert apgr == pytest.approx(0.9)
    apgr, lv = cv.levels(-oracle, small, large)  # the worst order: nothing gained until 80% of calls
    assert lv[0] == pytest.approx(-0.1) and lv[7] == pytest.approx(-0.8) and apgr == pytest.approx(0.1)
    apgr, lv = cv.levels(np.zeros(100), small, large)  # a constant score is random mixing: zero everywhere
    assert lv == pytest.approx(np.zeros(9), abs=1e-12) and apgr == pytest.approx(0.5)


def test_routers_from_the_cached_parts() -> None:
    rng = np.random.default_rng(1)
    n = 50
    fold = np.arange(n) % 5
    head, near = rng.normal(size=n), rng.uniform(size=n)
    parts = {"fold": fold[None, :], "head": head[None, :], "head_scaled": -head[None, :], "ngram": near[None, :],
             "near200": near[None, :], "near50": 1 - near[None, :], "choices": np.where(np.arange(n) < 10, 0.5, 0.0),
             "head_large": near[None, :] ** 2}
    assert np.array_equal(cv.router(parts, 0, "head"), head)
    assert np.array_equal(cv.router(parts, 0, "scaled-head"), -head)
    hr, nr = cv.fold_ranks(head, fold), cv.fold_ranks(2 * near - 1, fold)
    assert np.allclose(cv.router(parts, 0, "rank:0.5"), 0.5 * hr + 0.5 * nr)
    nr50 = cv.fold_ranks(1 - 2 * near, fold)
    assert np.allclose(cv.router(parts, 0, "rank:0.3:50"), 0.7 * hr + 0.3 * nr50)
    # shape: the first weight for prompts with multiple-choice options, the second for the rest
    got = cv.router(parts, 0, "shape:0.2:0.8")
    assert np.allclose(got[:10], 0.8 * hr[:10] + 0.2 * nr[:10]) and np.allclose(got[10:], 0.2 * hr[10:] + 0.8 * nr[10:])
    # cap: the large model's quality head's rank blended in beside the neighbours'
    lr = cv.fold_ranks(near**2, fold)
    assert np.allclose(cv.router(parts, 0, "cap:0.4:0.2"), 0.4 * hr + 0.4 * nr + 0.2 * lr)
    with pytest.raises(SystemExit, match="unknown variant"):
        cv.router(parts, 0, "value:0.5")


def test_cached_parts_of_another_reading_or_data_are_computed_again() -> None:
    """--turn-context reads MT-Bench's second turns otherwise: a cache of the plain reading is not reused for it
    (its figures were reported as the turn-context ones), nor one of another number of prompts."""
    parts = {"fold": np.zeros((6, 50), np.int64), "head": np.zeros((6, 50))}
    assert not cv.stale(parts, 6, 50, False, False, False)  # a cache of before the flag was kept: the plain reading
    assert cv.stale(parts, 6, 50, False, False, True)
    assert not cv.stale({**parts, "turn_context": np.array(True)}, 6, 50, False, False, True)
    assert cv.stale({**parts, "turn_context": np.array(True)}, 6, 50, False, False, False)
    assert cv.stale(parts, 7, 50, False, False, False) and cv.stale(parts, 6, 51, False, False, False)
    assert cv.stale(parts, 6, 50, True, False, False) and cv.stale(parts, 6, 50, False, True, False)
    assert cv.stale({}, 1, 50, False, False, False)
