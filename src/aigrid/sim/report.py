"""Writes what a run produced: summary.json, details.json, requests.csv, and the rich comparison tables.

requests.csv has one row per model call; a follow-up call of an agent session is numbered `session.step`
and its arrival_s is when it was sent. Its text cells (the scenario's tenant, site, endpoint and policy names) are
quoted and never a spreadsheet formula, its numbers unquoted; the tables show the scenario's names as text, never
rich markup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aigrid.cli_error import counted
from aigrid.printable import printable_text as _text  # a scenario's name: never markup
from aigrid.printable import spreadsheet_cell, spreadsheet_writer
from aigrid.sim.digest import run_digest
from aigrid.sim.experiment import Experiment
from aigrid.sim.runner import FAILED, OK, REFUSED_LATE, REJECTED, SHED

STATUS = {OK: "ok", REJECTED: "rejected", FAILED: "failed", SHED: "shed", REFUSED_LATE: "refused_late"}


def _clean(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def summary(ex: Experiment) -> dict[str, object]:
    """Exactly the shape issue 3 asks for: per policy under "policies", sim_wall_s and events on top."""
    return {
        "policies": {r.label: {k: _clean(v) for k, v in r.metrics.summary().items()} for r in ex.runs},
        "sim_wall_s": round(ex.wall_s, 3),
        "events": ex.events,
    }


def details(ex: Experiment) -> dict[str, object]:
    return {
        "scenario": ex.scenario.name,
        "seed": ex.scenario.seed,
        "runs": {r.label: {"wall_s": round(r.wall_s, 3), "cpu_s": round(r.cpu_s, 3), "events": r.result.events,
                           "failed": r.metrics.failed,
                           "offered_rps": r.metrics.offered_rps, "rejected_by_tenant": r.metrics.by_tenant_rejected,
                           "endpoints": len(r.grid.endpoints), "sites": len(r.grid.sites),
                           "digest": run_digest(r.result)} for r in ex.runs},
        "sweep": {label: [{"load": f, **{k: _clean(v) for k, v in m.summary().items()}} for f, m in points]
                  for label, points in ex.sweep.items()},
    }


def write_outputs(ex: Experiment, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.json", out / "details.json"]
    written[0].write_text(json.dumps(summary(ex), indent=2) + "\n")
    written[1].write_text(json.dumps(details(ex), indent=2) + "\n")
    if ex.scenario.write_requests_csv:
        written.append(_requests_csv(ex, out / "requests.csv"))
    return written


class _Figure:
    """A number as formatted here (`0.0037`, `117.2`): a number to the CSV writer (it has __float__), so written
    unquoted as its text, where a float would be written as its repr and a str quoted as text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __float__(self) -> float:
        return float(self.text)

    def __str__(self) -> str:
        return self.text


def _ms(x: float) -> _Figure | None:
    return None if math.isnan(x) else _Figure(f"{x * 1000:.1f}")


def _requests_csv(ex: Experiment, path: Path) -> Path:
    w = ex.workload
    with open(path, "w", newline="") as f:
        out = spreadsheet_writer(f)
        out.writerow(["policy", "request", "arrival_s", "tenant", "prompt_tokens", "output_tokens", "status",
                      "endpoint", "site", "jurisdiction", "attempts", "rtt_ms", "ttft_ms", "tpot_ms", "e2e_ms",
                      "cost_usd"])
        # the names are the scenario's text: spreadsheet_cell keeps a formula out of every cell (each name's cell
        # made once: a run writes a row per model call)
        tenants = [spreadsheet_cell(name) for name in w.tenant_names]
        for run in ex.runs:
            r, sites = run.result, run.grid.sites
            label = spreadsheet_cell(run.label)
            served = [[spreadsheet_cell(e.id), spreadsheet_cell(e.site_id),
                       spreadsheet_cell(sites[e.site_id].jurisdiction)] for e in run.grid.endpoints]
            plan = r.agents
            sent = w.t if r.sent_s is None else r.sent_s
            for i in range(len(r.status)):
                s = i if plan is None else int(plan.session[i])
                k = int(r.endpoint[i])
                out.writerow([
                    label, i if s == i else f"{s}.{int(plan.step[i])}",  # type: ignore[union-attr]
                    None if np.isnan(sent[i]) else _Figure(f"{sent[i]:.4f}"), tenants[int(w.tenant[s])],
                    int(w.prompt[s]), int(w.output[s]), STATUS.get(int(r.status[i]), "pending"),
                    *(served[k] if k >= 0 else ("", "", "")), int(r.attempts[i]),
                    _ms(r.rtt_s[i]) if k >= 0 else None, _ms(r.ttft_s[i]), _ms(r.tpot_s[i]), _ms(r.e2e_s[i]),
                    _Figure(f"{r.cost_usd[i]:.8f}"),
                ])
    return path


def table(ex: Experiment) -> Table:
    calls = ex.runs[0].metrics.requests if ex.runs and ex.runs[0].metrics.agent else 0
    count = (f"{counted(len(ex.workload), 'arrival', grouped=True)}, {counted(calls, 'model call', grouped=True)}"
             if calls else counted(len(ex.workload), "request", grouped=True))
    t = Table(title=_text(f"{ex.scenario.name}: policies on identical traffic ({count})"))
    for col in ("policy", "TTFT p50", "p90", "p99", "TPOT p50", "E2E p99", "goodput", "cost $", "resid. viol.",
                "rejected", "util"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    best = min((r.metrics.ttft_p99_ms for r in ex.runs if not np.isnan(r.metrics.ttft_p99_ms)), default=None)
    for r in ex.runs:
        m = r.metrics
        style = "bold green" if best is not None and m.ttft_p99_ms == best else None
        # each time with its unit (p90, p99 and E2E p99 were bare numbers beside "ms" ones until the 37th session)
        t.add_row(_text(r.label), f"{m.ttft_p50_ms:,.0f} ms", f"{m.ttft_p90_ms:,.0f} ms", f"{m.ttft_p99_ms:,.0f} ms",
                  f"{m.tpot_p50_ms:.1f} ms", f"{m.e2e_p99_ms:,.0f} ms", f"{m.goodput:.1%}", f"{m.cost_usd:.2f}",
                  str(m.residency_violations), f"{m.rejected:,}", f"{m.mean_utilization:.0%}", style=style)
    return t


def agent_table(ex: Experiment) -> Table | None:
    """Agent sessions per policy and agent tenant (None when the scenario has no agent tenant)."""
    if not any(r.metrics.agent for r in ex.runs):
        return None
    t = Table(title=_text(f"{ex.scenario.name}: agent sessions (e2e = arrival to final answer at the client)"))
    for col in ("policy", "tenant", "loop", "steps", "tool ms", "RTT p50", "sessions", "E2E p50", "E2E p99",
                "round trips", "unfinished"):
        t.add_column(col, justify="left" if col in ("policy", "tenant", "loop") else "right")
    for r in ex.runs:
        by_tenant = r.metrics.agent.get("agent_by_tenant", {})
        assert isinstance(by_tenant, dict)
        for name, f in by_tenant.items():
            t.add_row(_text(r.label), _text(name), f["loop"], str(f["steps"]), f"{f['tool_ms']:g}", _fmt_ms(f["rtt_p50_ms"]),
                      f"{f['sessions']:,}",
                      _fmt_ms(f["e2e_p50_ms"]), _fmt_ms(f["e2e_p99_ms"]), _fmt_num(f["round_trips"]),
                      f"{f['unfinished']:,}")
    return t


def right_size_table(ex: Experiment) -> Table | None:
    """Right-sized tenants and the tenants replaying their requests, per policy (None without any)."""
    if not any(r.metrics.right_size for r in ex.runs):
        return None
    t = Table(title=_text(f"{ex.scenario.name}: right-sized models (quality: labels of the held-out prompts; "
                          "estimated: the gateway's estimate)"))
    for col in ("policy", "tenant", "to each model", "cost $", "TTFT p50", "TTFT p99", "estimated quality",
                "realised quality"):
        t.add_column(col, justify="left" if col in ("policy", "tenant", "to each model") else "right")
    for r in ex.runs:
        by_tenant = r.metrics.right_size.get("right_size_by_tenant", {})
        assert isinstance(by_tenant, dict)
        for name, f in by_tenant.items():
            share = ", ".join(f"{m} {v:.0%}" for m, v in f["share_by_model"].items())
            t.add_row(_text(r.label), _text(name), _text(share), f"{f['cost_usd']:.3f}", _fmt_ms(f["ttft_p50_ms"]),
                      _fmt_ms(f["ttft_p99_ms"]), _fmt_num(f["estimated_quality"], 3),
                      _fmt_num(f["realised_quality"], 3))
    return t


def class_table(ex: Experiment) -> Table | None:
    """Per urgency class and policy (None unless the traffic has classes or some request waited or was shed)."""
    if not any(len(r.metrics.by_class) > 1 or r.metrics.deferred or r.metrics.shed for r in ex.runs):
        return None
    t = Table(title=_text(f"{ex.scenario.name}: urgency classes (goodput within each class's SLO)"))
    for col in ("policy", "class", "requests", "goodput", "TTFT p50", "p99", "deferred", "shed", "refused late",
                "unserved"):
        t.add_column(col, justify="left" if col in ("policy", "class") else "right")
    for r in ex.runs:
        for name, f in r.metrics.by_class.items():
            t.add_row(_text(r.label), _text(name), f"{f['requests']:,}", f"{f['goodput']:.1%}", _fmt_ms(f["ttft_p50_ms"]),
                      _fmt_ms(f["ttft_p99_ms"]), f"{f['deferred']:,}", f"{f['shed']:,}", f"{f['refused_late']:,}",
                      f"{f['unserved']:,}")
    return t


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.0f} ms"


def _fmt_num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(ex: Experiment, console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(ex))
    for extra in (class_table(ex), agent_table(ex), right_size_table(ex)):
        if extra is not None:
            console.print(extra)
