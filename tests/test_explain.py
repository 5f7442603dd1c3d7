"""`aigrid explain` shows the server's text as text: an engine's error or health reason is neither rich markup nor
a terminal's escape sequence."""

from __future__ import annotations

import io
import random

from rich.console import Console

from aigrid.core.types import Endpoint
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
    table 0.833 (the rounded one formatted again). A cost score of 0.13495: "0.13" against 0.135's "0.14"."""
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
    assert f"strongest axes ttft {scores['ttft']}, cost {scores['cost']}" in d["reason"], (d["reason"], row)
    assert f"predicted TTFT {ttft} ms" in d["reason"], (d["reason"], row)


def _headline_axes(reason: str) -> list[str]:
    """The axis names of the reason's headline ("strongest axes ttft 1.00, cost 0.75"), in order."""
    named = reason.split("strongest axes ")[1].split("; ")[0]
    return [part.split(" ")[0] for part in named.split(", ")]


def test_the_headline_names_the_axes_that_separated_the_candidates() -> None:
    """RT2 (thirty-third session): proximity scores health only, so every healthy candidate scores 1.00 on it,
    and the headline's "strongest axes" named "proximity 1.00", which says nothing. An axis on which all the
    candidates tie is left out: here the three healthy sites tie on proximity (1.00), and the winner's two
    strongest axes among the rest are named."""
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
    named = _headline_axes(d.reason)
    assert "proximity" not in named and len(named) == 2, d.reason
    chosen = d.chosen.scores
    spread = {a for a in chosen if max(c.scores[a] for c in d.ranked) - min(c.scores[a] for c in d.ranked) > 1e-4}
    assert named == sorted(spread, key=lambda a: -chosen[a])[:2], (d.reason, chosen)


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
