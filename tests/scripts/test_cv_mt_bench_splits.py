"""scripts/cv_mt_bench_splits.py: the held-out question draws, the MT-Bench priors and the shrinkage its variants
are made of (docs/models.md, "MT-Bench over many held-out question draws")."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the script imports the trainer's helpers (the `train` extra)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cv_mt_bench_splits_under_test", ROOT / "scripts" / "cv_mt_bench_splits.py")
assert spec and spec.loader
mtb = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mtb  # a dataclass reads its module's namespace
spec.loader.exec_module(mtb)


def test_question_draws_hold_out_distinct_training_questions_reproducibly() -> None:
    qs = [str(i) for i in range(58)]
    draws = mtb.question_splits(qs, 22, 50)
    assert len(draws) == 50 and all(len(d) == 22 and d <= set(qs) for d in draws)
    assert len({frozenset(d) for d in draws}) == 50  # not one draw repeated
    assert draws == mtb.question_splits(list(reversed(qs)), 22, 50)  # the order given does not matter
    with pytest.raises(SystemExit, match="--held-out"):
        mtb.question_splits(qs, 58, 1)


def unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_priors_read_the_nearest_reference_prompts_and_categories() -> None:
    ref = unit([1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.2, 0.8])
    ref_gain = np.array([0.4, 0.2, 0.0, -0.1, 0.1])
    ref_cat = np.array(["math", "math", "writing", "writing", "writing"])
    query = unit([1, 0.05], [0.05, 1])
    assert mtb.knn_prior(query, ref, ref_gain, 2) == pytest.approx([0.3, -0.05])
    assert mtb.knn_prior(query, ref, ref_gain, 99) == pytest.approx([0.12, 0.12])  # k beyond the table: all of it
    assert mtb.centroid_prior(query, ref, ref_cat, ref_gain) == pytest.approx([0.3, 0.0])


def test_shrink_moves_gated_prompts_toward_the_prior_only() -> None:
    g, prior = np.array([0.2, 0.2, 0.2]), np.array([0.0, 0.0, 0.0])
    gate = np.array([1.0, 0.5, 0.0])
    assert mtb.shrink(g, prior, gate, 0.5) == pytest.approx([0.1, 0.15, 0.2])
    assert mtb.shrink(g, prior, gate, 0.5, hard=0.5) == pytest.approx([0.1, 0.1, 0.2])
    assert mtb.shrink(g, prior, gate, 0.0) == pytest.approx(g)


def test_variants_from_one_split() -> None:
    ref = unit([1, 0], [0, 1])
    x = mtb.Split(g=np.array([0.5, -0.5, 0.1]), gate=np.array([1.0, 1.0, 0.0]), vectors=unit([1, 0.1], [0.1, 1], [1, 0]),
                  cat=np.array(["math", "writing", ""]), ref_vectors=ref, ref_gain=np.array([0.3, -0.1]),
                  ref_cat=np.array(["math", "writing"]), turn1=np.array([0.5, 0.3, 0.1]),
                  is_turn2=np.array([False, True, False]), by_k={50: np.array([0.0, 0.0, 0.0])})
    assert np.array_equal(mtb.variant_score("shipped", x), x.g)
    assert mtb.variant_score("knn:1:1", x) == pytest.approx([0.3, -0.1, 0.1])  # the third is not gated
    assert mtb.variant_score("cent:0.5", x) == pytest.approx([0.4, -0.3, 0.1])
    assert mtb.variant_score("cat:1", x) == pytest.approx([0.3, -0.1, 0.1])  # no category: left as it is
    assert mtb.variant_score("mean:0.5", x) == pytest.approx([0.3, -0.2, 0.1])  # toward 0.1, the gated two
    assert mtb.variant_score("near:50", x) == pytest.approx([0.0, 0.0, 0.1])
    assert mtb.variant_score("turn1:0.5", x) == pytest.approx([0.5, -0.1, 0.1])
    with pytest.raises(SystemExit, match="unknown variant"):
        mtb.variant_score("value:0.5", x)


def test_summary_row_counts_cells_below_random_and_paired_wins() -> None:
    apgr, base = np.array([0.6, 0.5, 0.7, 0.4]), np.array([0.5, 0.5, 0.6, 0.5])
    below = np.zeros((4, 9), bool)
    below[0, :3] = True
    below[3, 0] = True
    row = mtb.summarise(apgr, below, base)
    assert "11.1%" in row  # 4 of 36 cells
    assert "| 50% |" in row  # 2 of 4 draws with a level below
    assert "+0.0250 (50% / 25%)" in row
