import numpy as np
import pytest

from aigrid.core.types import RequestInfo
from aigrid.rightsize.estimator import OperatingTable, QualityEstimate, QualityEstimator
from aigrid.rightsize.right_sizer import RightSizer, ladder_quality
from aigrid.spec.models import RightSizeSpec


def test_a_ladder_places_middle_models_between_the_two_references():
    est = QualityEstimate(p_small=0.6, p_large=0.9, p_win=0.6)  # gain 0.2
    q = ladder_quality(["1b", "8b", "70b"], est)
    assert q == pytest.approx({"1b": 0.7, "8b": 0.8, "70b": 0.9})
    # a negative gain never ranks the large model below a smaller one
    assert ladder_quality(["1b", "70b"], QualityEstimate(0.9, 0.8, 0.2)) == {"1b": 0.8, "70b": 0.8}


def test_the_target_picks_the_most_permissive_threshold_that_stays_within_it():
    table = OperatingTable(np.array([0.0, 0.1, 0.2, 0.3]), np.array([1.0, 0.7, 0.4, 0.1]),
                           np.array([0.0, 0.01, 0.03, 0.02]))
    assert table.threshold_for(0.015) == 0.1
    assert table.threshold_for(0.025) == 0.1  # 0.3 alone is within, but 0.2 before it is not
    assert table.threshold_for(0.05) == 0.3


def test_only_auto_requests_of_right_sizing_tenants_get_estimates():
    est = QualityEstimator.load()
    rs = RightSizer({"t": RightSizeSpec(models=["70b", "1b"], max_quality_drop=0.1)}, {"1b": 1.0, "70b": 70.0,
                                                                                      "8b": 8.0}, est)
    assert rs.ladders["t"] == ("1b", "70b")
    info = RequestInfo("r", "auto")
    out = rs.apply(info, "What is 2 + 2?", "t")
    assert set(out.quality) == {"1b", "70b"} and out.max_quality_drop == 0.1
    assert rs.apply(info, "x", "other") is info
    assert rs.apply(RequestInfo("r", "70b"), "x", "t").quality is None
    # from the quality target, through the artefact's operating table
    rs2 = RightSizer({"t": RightSizeSpec(quality_target=0.05)}, {"1b": 1.0, "70b": 70.0}, est)
    assert est.table is not None and rs2.thresholds["t"] == est.table.threshold_for(0.05)
    # nobody right-sizes: the artefact is not even loaded
    assert RightSizer({}, {"1b": 1.0}).estimator is None


def test_the_model_cards_explain_example_shows_the_shipped_estimates():
    """docs/models.md opens with `aigrid explain` on a one-line multiple-choice prompt and quotes a GSM8K problem's
    estimates: they are the shipped artefact's (the judged prior gates the one-line prompt: 0.95, not 0.92)."""
    from pathlib import Path

    from aigrid.core.right_size import estimate_text

    card = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text(encoding="utf-8")
    est = QualityEstimator.load()
    mammal = ladder_quality(["small-1b", "large-70b"], est.estimate(
        "Which of these is a mammal? A. Shark B. Dolphin C. Trout D. Octopus"))
    natalia = ladder_quality(["small-1b", "large-70b"], est.estimate(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
        "clips did Natalia sell altogether in April and May?"))
    shown = {m: estimate_text(q) for m, q in mammal.items()}
    assert f"model small-1b: estimated quality {shown['small-1b']} vs large-70b {shown['large-70b']}" in card
    assert f"estimated quality small-1b {shown['small-1b']}, large-70b {shown['large-70b']}" in card
    assert (f"the Natalia problem of GSM8K: small-1b {estimate_text(natalia['small-1b'])}, large-70b "
            f"{estimate_text(natalia['large-70b'])}") in card
