"""`aigrid explain` shows the server's text as text: an engine's error or health reason is neither rich markup nor
a terminal's escape sequence."""

from __future__ import annotations

import io
import random

from rich.console import Console

from aigrid.core.types import AXES, Decision, Endpoint, Policy
from aigrid.explain import render_decision

HOSTILE = "HTTP 500: [/x] [link=https://evil.example/login]re-enter your key[/link] \x1b]8;;https://evil\x1b\\"


def test_an_engines_text_in_a_decision_is_shown_as_written() -> None:
    d = {"id": "d1", "policy": "aigrid", "tenant": "t", "model": "m", "status": "ok", "client": None,
         "served_by": "fra-1", "reason": "chosen", "candidates": [],
         "rejected": [{"endpoint": "nrt-1", "site": "nrt", "filter": "health", "reason": HOSTILE}],
         "attempts": [{"endpoint": "iad-1", "ok": False, "ms": 3.0, "error": HOSTILE}, {"endpoint": "fra-1", "ok": True}]}
    out = io.StringIO()
    Console(file=out, width=400, force_terminal=True).print(render_decision(d))
    text = out.getvalue()
    assert text.count("[link=https://evil.example/login]re-enter your key[/link]") == 2, text
    assert "\x1b]8;;https://evil" not in text and "\x1b\\" not in text  # no hyperlink, no raw escape


class _Fixed:
    """A scorer that gives every endpoint one score on its axis (`others`, where given: every endpoint but
    fra's)."""

    def __init__(self, axis: str, value: float, others: float | None = None) -> None:
        self.axis = axis
        self.value = value
        self.others = value if others is None else others

    def score(self, ctx: object, endpoint: Endpoint, state: object, prediction: object) -> tuple[float, str, tuple[object, ...]]:
        return self.value if endpoint.site_id == "fra" else self.others, "fixed", ()


def test_the_reason_and_the_table_show_one_total() -> None:
    """A total of 0.83249 is 0.8325 in /v1/decisions; the reason said "total 0.832" (the unrounded total) and the
    table 0.833 (the rounded one formatted again). The headline's weighted margin is rounded the same way: the
    ttft axis, all of the policy's weight, puts fra 0.83249 ahead of iad's 0.0, "+0.833" as the totals differ."""
    from aigrid.core.plugins import Scorer
    from aigrid.core.registry import PICKERS
    from aigrid.core.scheduler import Profile, Scheduler
    from aigrid.core.types import AXES, Policy, RequestInfo
    from aigrid.gateway.decisions import decision_dict
    from tests.core.grid import endpoint, view

    values = {"ttft": 0.83249, "cost": 0.13495}
    scorers: tuple[Scorer, ...] = tuple(_Fixed(a, values.get(a, 0.0), 0.0) for a in AXES)
    scheduler = Scheduler(Profile(filters=(), scorers=scorers, picker=PICKERS["slo-gate"]()), explain=True)
    decision = scheduler(RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128),
                         view((endpoint("fra"), endpoint("iad"))), Policy("p", {"ttft": 1.0}), random.Random(0))
    d = {**decision_dict(decision), "served_by": None, "attempts": []}
    assert d["candidates"][0]["total"] == 0.8325
    out = io.StringIO()
    Console(file=out, width=400, no_color=True).print(render_decision(d))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "fra-small" in line and "│" in line)
    cells = [c.strip() for c in row.split("│")]
    total = cells[6 + len(AXES)]
    scores = dict(zip(AXES, cells[6:6 + len(AXES)], strict=True))
    ttft = cells[7 + len(AXES)]
    assert f"total {total}," in d["reason"] and total == "0.833", (d["reason"], row)
    assert scores["ttft"] == "0.83" and f"ahead of iad-small on ttft +{total}" in d["reason"], (d["reason"], row)
    assert f"predicted TTFT {ttft} ms" in d["reason"], (d["reason"], row)


def _headline(reason: str) -> tuple[list[tuple[str, float]], tuple[str, float] | None]:
    """The reason's headline ("ahead of iad-small on ttft +0.073, affinity +0.010; behind it on cost -0.023"): the
    axes named as ahead with their margins, in order, and the one named as behind (None: none)."""
    parts = reason.split("; ")
    at = next(i for i, part in enumerate(parts) if part.startswith("ahead of "))
    won = parts[at].split(" on ", 1)[1]
    ahead = [] if won == "no axis" else [(a, float(m)) for a, m in (x.split(" ") for x in won.split(", "))]
    behind = None
    if at + 1 < len(parts) and parts[at + 1].startswith("behind it on "):
        axis, margin = parts[at + 1].removeprefix("behind it on ").split(" ")
        behind = (axis, float(margin))
    return ahead, behind


def test_the_headline_names_the_axes_that_separated_the_candidates() -> None:
    """RT2 (thirty-third session): proximity scores health only, so every healthy candidate scores 1.00 on it,
    and the headline's "strongest axes" named "proximity 1.00", which says nothing. The headline names the axes
    on which the winner's weighted score beats the runner-up's, by the most points first: here the three healthy
    sites tie on proximity (1.00), which is never named."""
    from aigrid.core.policies import BUILTIN_POLICIES
    from aigrid.core.scheduler import schedule
    from aigrid.core.types import RequestInfo
    from tests.core.grid import CITIES, endpoint, view

    grid = (endpoint("fra"), endpoint("iad", price=0.3), endpoint("nrt", price=0.2))
    request = RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128,
                          client_location=CITIES["frankfurt"])
    d = schedule(request, view(grid), BUILTIN_POLICIES["balanced"], random.Random(0))
    assert d.chosen is not None and d.chosen.site_id == "fra", d.reason
    assert {c.scores["proximity"] for c in d.ranked} == {1.0}  # the tie this test is about
    ahead, behind = _headline(d.reason)
    weights = BUILTIN_POLICIES["balanced"].weights
    runner = d.ranked[1]
    points = {a: weights[a] * (d.chosen.scores[a] - runner.scores[a]) for a in weights}
    expected = sorted((a for a in points if round(points[a], 3) > 0), key=lambda a: -points[a])[:2]
    assert expected and [a for a, _ in ahead] == expected and "proximity" not in expected, (d.reason, points)
    assert all(abs(m - points[a]) <= 5.5e-4 for a, m in ahead), (d.reason, points)  # to 4 places, then 3
    assert behind is None or points[behind[0]] < 0, (d.reason, points)


def test_the_headline_says_when_the_candidates_tie_on_every_axis() -> None:
    """Two candidates with the same score on every axis: no axis separated them, and the headline says so
    rather than naming the winner's highest scores; a lone candidate is named as the only one."""
    from aigrid.core.plugins import Scorer
    from aigrid.core.registry import PICKERS
    from aigrid.core.scheduler import Profile, Scheduler
    from aigrid.core.types import AXES, Policy, RequestInfo
    from tests.core.grid import endpoint, view

    scorers: tuple[Scorer, ...] = tuple(_Fixed(a, 0.5) for a in AXES)
    scheduler = Scheduler(Profile(filters=(), scorers=scorers, picker=PICKERS["slo-gate"]()), explain=True)
    request = RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128)
    policy = Policy("p", {"ttft": 1.0})
    tied = scheduler(request, view((endpoint("fra"), endpoint("iad"))), policy, random.Random(0))
    assert "strongest axes" not in tied.reason and "the 2 candidates tie on every axis" in tied.reason, tied.reason
    alone = scheduler(request, view((endpoint("fra"),)), policy, random.Random(0))
    assert "strongest axes" not in alone.reason and "the only candidate" in alone.reason, alone.reason


def _two_sites(values: dict[str, tuple[float, float]], policy: Policy) -> Decision:
    """A decision between fra and iad scored with fixed (fra, iad) scores on each axis (0.5 for both where not
    given), under the policy."""
    from aigrid.core.plugins import Scorer
    from aigrid.core.registry import PICKERS
    from aigrid.core.scheduler import Profile, Scheduler
    from aigrid.core.types import AXES, RequestInfo
    from tests.core.grid import endpoint, view

    scorers: tuple[Scorer, ...] = tuple(_Fixed(a, *values.get(a, (0.5, 0.5))) for a in AXES)
    scheduler = Scheduler(Profile(filters=(), scorers=scorers, picker=PICKERS["slo-gate"]()), explain=True)
    request = RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128)
    return scheduler(request, view((endpoint("fra"), endpoint("iad"))), policy, random.Random(0))


def test_the_headline_never_names_an_axis_the_policy_gives_no_weight() -> None:
    """EXP (thirty-third session): the headline named the winner's highest scores whatever their weight: under a
    policy weighing ttft only, "strongest axes cost 0.90, ttft 0.60", though cost counted for nothing. Now only
    the ttft margin is named; and where the two differ only on an axis of no weight, they are level."""
    from aigrid.core.types import Policy

    d = _two_sites({"ttft": (0.6, 0.5), "cost": (0.9, 0.1)}, Policy("p", {"ttft": 1.0}))
    assert d.chosen is not None and d.chosen.site_id == "fra", d.reason
    assert "cost" not in d.reason, d.reason
    assert _headline(d.reason) == ([("ttft", 0.1)], None), d.reason
    level = _two_sites({"cost": (0.9, 0.1)}, Policy("p", {"ttft": 1.0}))
    assert level.chosen is not None
    other = next(c.endpoint_id for c in level.ranked if c is not level.chosen)
    assert f"level with {other} on every weighted axis" in level.reason and "cost" not in level.reason, level.reason


def test_the_headline_names_an_axis_the_winner_lost_as_lost() -> None:
    """EXP (thirty-third session): the demo's decision read "strongest axes ttft 1.00, cost 0.73", but fra's cost
    score 0.73 was below iad's 0.84: cost counted against fra. Under balanced's weights fra is ahead on ttft
    (0.35 x 0.22 = +0.077) and behind on cost (0.2 x -0.11 = -0.022), which brought iad close; the other axes
    tie. The points add up to the totals' difference."""
    from aigrid.core.policies import BUILTIN_POLICIES

    values = {"ttft": (1.0, 0.78), "cost": (0.73, 0.84), "affinity": (0.7, 0.7), "headroom": (0.76, 0.76),
              "proximity": (1.0, 1.0)}
    d = _two_sites(values, BUILTIN_POLICIES["balanced"])
    assert d.chosen is not None and d.chosen.site_id == "fra", d.reason
    assert "ahead of iad-small on ttft +0.077; behind it on cost -0.022" in d.reason, d.reason
    ahead, behind = _headline(d.reason)
    assert [a for a, _ in ahead] == ["ttft"] and behind is not None and behind[0] == "cost", d.reason
    gap = d.ranked[0].total - d.ranked[1].total
    assert abs(sum(m for _, m in ahead) + behind[1] - gap) <= 1e-3, (d.reason, gap)


def _served(first_token: bool | None) -> str:
    """explain's text of a decision served by fra-1 in 2058 ms to first byte, predicted 112 ms (p90 163 ms);
    `first_token` None: a decision of a gateway before the field."""
    cand = {"endpoint": "fra-1", "model": "m", "site": "fra", "jurisdiction": "EU", "scores": dict.fromkeys(AXES, 1.0),
            "total": 1.0, "predicted_ttft_ms": 112.0, "predicted_ttft_p90_ms": 163.0, "rtt_ms": 9.0, "queue_ms": 0.0,
            "prefill_ms": 103.0, "distance_km": 0}
    d = {"id": "d1", "policy": "balanced", "tenant": "t", "model": "m", "status": "ok", "client": None,
         "served_by": "fra-1", "ttft_ms": 2058.0, "reason": "chosen", "candidates": [cand], "rejected": [],
         "attempts": [{"endpoint": "fra-1", "ok": True, "ms": 2057.7}]}
    if first_token is not None:
        d["ttft_is_first_token"] = first_token
    out = io.StringIO()
    Console(file=out, width=400, no_color=True).print(render_decision(d))
    return out.getvalue()


def test_a_whole_answers_first_byte_is_not_set_beside_the_predicted_ttft() -> None:
    """quickstart's "See why" (a request not streamed, 32 tokens) then `aigrid explain` said "observed 2058 ms
    (18.42x the p50)": the whole answer's time against a first token's prediction, a prediction 18 times wrong to
    an operator's eye (the gateway's own TTFT metrics and calibration leave such a first byte out)."""
    whole = _served(False)
    assert "in 2058 ms to first byte (not a TTFT: a whole answer, not streamed, a tool loop's or a refusal's)" in whole, whole
    assert "the p50" not in whole and "observed" not in whole, whole
    for streamed in (_served(True), _served(None)):
        assert "observed 2058 ms (18.38x the p50)" in streamed and "not a TTFT" not in streamed, streamed


def test_the_candidates_table_says_the_unit_of_its_time_columns() -> None:
    """Only "pred. TTFT ms" had a unit: p90, rtt, queue, prefill and gw rtt were bare numbers beside km, and an
    operator reading `gw rtt 1.9` could not tell ms from s (brief UX2, 7 Dec 2026). The caption names ms."""
    d = {"id": "d1", "policy": "balanced", "tenant": "t", "model": "m", "status": "ok", "client": None,
         "served_by": None, "reason": "chosen", "rejected": [], "attempts": [],
         "candidates": [{"endpoint": "fra-1", "model": "m", "site": "fra", "jurisdiction": "EU",
                         "scores": dict.fromkeys(AXES, 0.5), "total": 0.5, "predicted_ttft_ms": 120.0,
                         "predicted_ttft_p90_ms": 180.0, "rtt_ms": 15.0, "queue_ms": 0.0, "prefill_ms": 105.0,
                         "distance_km": 423, "measured_rtt_ms": 1.9}]}
    out = io.StringIO()
    Console(file=out, width=400, no_color=True).print(render_decision(d))
    caption = next(line for line in out.getvalue().splitlines() if "candidates (best first)" in line)
    assert "TTFT = rtt + queue + prefill, in ms (p90 and gw rtt too)" in caption, caption
