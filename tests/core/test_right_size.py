import random
from dataclasses import replace

from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.right_size import eligible_models
from aigrid.core.scheduler import schedule
from aigrid.core.types import RequestInfo

from .grid import CITIES, endpoint, view

# a small model at the client's site and a large one farther away, the large one 10x the price
GRID = view((endpoint("fra", "small", price=0.1), endpoint("iad", "big", price=1.0)))
BASE = RequestInfo("r1", "auto", prompt_tokens=200, client_location=CITIES["frankfurt"], max_quality_drop=0.05)


def _policy():
    return BUILTIN_POLICIES["balanced"]


def test_an_easy_prompt_goes_to_the_small_model_and_the_decision_says_why():
    req = replace(BASE, quality={"small": 0.80, "big": 0.82})
    d = schedule(req, GRID, _policy(), random.Random(0))
    assert d.chosen is not None and d.chosen.model == "small"
    assert d.model_choice is not None and d.model_choice.chosen == "small" and d.model_choice.best == "big"
    assert d.model_choice.cost_saved_usd > 0 and d.model_choice.ttft_saved_ms > 0
    assert "model small: estimated quality 0.80 vs big 0.82 (target: within 0.05)" in d.reason
    assert "saves $" in d.reason
    # the large model stays a candidate (failover), with a lower fit
    assert [c.model for c in d.ranked] == ["small", "big"]
    assert d.ranked[0].scores["affinity"] > d.ranked[1].scores["affinity"]


def test_a_hard_prompt_goes_to_the_large_model_even_when_it_is_far_and_dear():
    req = replace(BASE, quality={"small": 0.40, "big": 0.85})
    d = schedule(req, GRID, _policy(), random.Random(0))
    assert d.chosen is not None and d.chosen.model == "big"
    assert [r.filter for r in d.rejected] == ["quality"]
    assert "estimated quality 0.40 is 0.45 below big's 0.85 (target: within 0.05)" in d.rejected[0].reason
    assert eligible_models(req) == ("big",)


def test_the_target_moves_the_operating_point():
    req = replace(BASE, quality={"small": 0.70, "big": 0.85})
    assert schedule(req, GRID, _policy(), random.Random(0)).chosen.model == "big"
    loose = replace(req, max_quality_drop=0.2)
    assert schedule(loose, GRID, _policy(), random.Random(0)).chosen.model == "small"


def test_models_off_the_ladder_are_rejected_and_no_estimate_changes_nothing():
    req = replace(BASE, quality={"big": 0.9})
    d = schedule(req, GRID, _policy(), random.Random(0))
    assert d.chosen.model == "big" and "not among the models estimated" in d.rejected[0].reason
    plain = schedule(replace(BASE, quality=None), GRID, _policy(), random.Random(0))
    assert plain.model_choice is None and not plain.rejected and "estimated quality" not in plain.reason


def test_the_reason_and_aigrid_explain_show_one_estimate():
    """An estimate of 0.80499 is 0.805 in /v1/decisions: the reason said "0.80" (the unrounded estimate) and
    `aigrid explain` "0.81" (0.805 formatted again); both now format the value the record keeps."""
    import io

    from rich.console import Console

    from aigrid.explain import render_decision
    from aigrid.gateway.decisions import decision_dict

    req = replace(BASE, quality={"small": 0.80499, "big": 0.82})
    decision = schedule(req, GRID, _policy(), random.Random(0))
    d = {**decision_dict(decision), "served_by": None, "attempts": []}
    assert d["model_choice"]["estimates"]["small"] == 0.805
    out = io.StringIO()
    Console(file=out, width=400, no_color=True).print(render_decision(d))
    line = next(x for x in out.getvalue().splitlines() if "(right-sized): estimated quality" in x)
    shown = dict(pair.split(" ") for pair in line.split("estimated quality ")[1].split("; ")[0].split(", "))
    assert shown == {"small": "0.81", "big": "0.82"}, line
    assert f"estimated quality {shown['small']} vs big {shown['big']}" in d["reason"], (d["reason"], line)


def test_a_rejection_formats_its_estimates_as_the_reason_does():
    """The quality filter's rejection formatted the unrounded estimate ("0.80" for 0.80499, which the decision
    record keeps as 0.805 and `aigrid explain` shows as "0.81"); it now uses right_size.estimate_text too."""
    req = replace(BASE, quality={"small": 0.80499, "big": 0.90})
    d = schedule(req, GRID, _policy(), random.Random(0))
    assert d.chosen is not None and d.chosen.model == "big"
    assert "estimated quality 0.81 is 0.10 below big's 0.90" in d.rejected[0].reason
