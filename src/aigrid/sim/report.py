"""Writes what a run produced: summary.json, details.json, requests.csv, and the rich comparison table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aigrid.sim.experiment import Experiment
from aigrid.sim.runner import FAILED, OK, REJECTED

STATUS = {OK: "ok", REJECTED: "rejected", FAILED: "failed"}


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
        "runs": {r.label: {"wall_s": round(r.wall_s, 3), "events": r.result.events, "failed": r.metrics.failed,
                           "offered_rps": r.metrics.offered_rps, "rejected_by_tenant": r.metrics.by_tenant_rejected,
                           "endpoints": len(r.grid.endpoints), "sites": len(r.grid.sites)} for r in ex.runs},
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


def _ms(x: float) -> str:
    return "" if math.isnan(x) else f"{x * 1000:.1f}"


def _requests_csv(ex: Experiment, path: Path) -> Path:
    w = ex.workload
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["policy", "request", "arrival_s", "tenant", "prompt_tokens", "output_tokens", "status",
                      "endpoint", "site", "jurisdiction", "attempts", "rtt_ms", "ttft_ms", "tpot_ms", "e2e_ms",
                      "cost_usd"])
        for run in ex.runs:
            r, eps, sites = run.result, run.grid.endpoints, run.grid.sites
            for i in range(len(w)):
                k = int(r.endpoint[i])
                ep = eps[k] if k >= 0 else None
                out.writerow([
                    run.label, i, f"{w.t[i]:.4f}", w.tenant_names[int(w.tenant[i])], int(w.prompt[i]),
                    int(w.output[i]), STATUS.get(int(r.status[i]), "pending"), ep.id if ep else "",
                    ep.site_id if ep else "", sites[ep.site_id].jurisdiction if ep else "", int(r.attempts[i]),
                    _ms(r.rtt_s[i]) if ep else "", _ms(r.ttft_s[i]), _ms(r.tpot_s[i]), _ms(r.e2e_s[i]),
                    f"{r.cost_usd[i]:.8f}",
                ])
    return path


def table(ex: Experiment) -> Table:
    t = Table(title=f"{ex.scenario.name}: policies on identical traffic ({len(ex.workload):,} requests)")
    for col in ("policy", "TTFT p50", "p90", "p99", "TPOT p50", "E2E p99", "goodput", "cost $", "resid. viol.",
                "rejected", "util"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    best = min((r.metrics.ttft_p99_ms for r in ex.runs if not np.isnan(r.metrics.ttft_p99_ms)), default=None)
    for r in ex.runs:
        m = r.metrics
        style = "bold green" if best is not None and m.ttft_p99_ms == best else None
        t.add_row(r.label, f"{m.ttft_p50_ms:,.0f} ms", f"{m.ttft_p90_ms:,.0f}", f"{m.ttft_p99_ms:,.0f}",
                  f"{m.tpot_p50_ms:.1f} ms", f"{m.e2e_p99_ms:,.0f}", f"{m.goodput:.1%}", f"{m.cost_usd:.2f}",
                  str(m.residency_violations), f"{m.rejected:,}", f"{m.mean_utilization:.0%}", style=style)
    return t


def print_table(ex: Experiment, console: Console | None = None) -> None:
    (console or Console()).print(table(ex))
