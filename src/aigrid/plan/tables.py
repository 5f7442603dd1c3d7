"""The plan's tables: cost per site and month, the SLO checks, the comparison with naive placements; as
Markdown (for people and docs), CSV (for spreadsheets) and plan.json (for scripts and `--from`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aigrid.plan.chunks import DEFAULT_CHUNK
from aigrid.plan.placement import HOURS_PER_MONTH, Placement
from aigrid.plan.planner import PlanResult
from aigrid.plan.runs import Outcome
from aigrid.plan.verify import Verdict, passes
from aigrid.printable import markdown_cell, spreadsheet_cell, spreadsheet_writer


def cost_rows(p: Placement) -> list[dict[str, Any]]:
    rows = []
    for s in p.sites:
        rows.append({"site": s.id, "city": s.city, "jurisdiction": s.jurisdiction, "hardware": s.hardware,
                     "prefill_chunk_tokens": s.chunk_tokens, "replicas": ", ".join(f"{m} x {n}" for m, n in s.replicas), "devices": s.devices,
                     "usd_per_device_hour": round(s.usd_per_device_hour, 4), "usd_per_hour": round(s.usd_per_hour, 2),
                     "usd_per_month": round(s.usd_per_hour * HOURS_PER_MONTH, 0)})
    return rows


def write_cost_csv(path: Path, p: Placement) -> None:
    """cost.csv: every text cell quoted and none a formula (printable.spreadsheet_cell: a model's name is the
    demand file's text), the numbers as numbers."""
    rows = cost_rows(p)
    with open(path, "w", newline="") as f:
        w = spreadsheet_writer(f)
        w.writerow(list(rows[0]))
        w.writerows([spreadsheet_cell(v) for v in r.values()] for r in rows)


def cost_markdown(p: Placement) -> str:
    lines = ["| site | city | jurisdiction | hardware | prefill chunk (tokens) | replicas | devices | $/device-h | $/h | "
             "$/month |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cost_rows(p):
        site, city, where, hardware, replicas = (markdown_cell(r[k]) for k in ("site", "city", "jurisdiction",
                                                                               "hardware", "replicas"))
        lines.append(f"| {site} | {city} | {where} | {hardware} | "
                     f"{r['prefill_chunk_tokens']:,} | {replicas} | "
                     f"{r['devices']} | {r['usd_per_device_hour']:.2f} | {r['usd_per_hour']:.2f} | "
                     f"{r['usd_per_month']:,.0f} |")
    lines.append(f"| **total** | | | | | | **{p.devices}** | | **{p.usd_per_hour:.2f}** | "
                 f"**{p.usd_per_month:,.0f}** |")
    return "\n".join(lines)


def slo_rows(outcomes: list[Outcome], attainment: float) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes:
        worst = min(o["tenants"].items(), key=lambda kv: kv[1]["attainment"])
        rows.append({"check": o["check"]["label"], "requests": o["requests"],
                     "within_slo": round(o["within"] / max(o["requests"], 1), 4),
                     "worst_tenant": worst[0], "worst_tenant_within_slo": round(worst[1]["attainment"], 4),
                     "ttft_p99_ms": None if o["ttft_p99_ms"] is None else round(o["ttft_p99_ms"], 1),
                     "not_served": o["rejected"], "residency_violations": o["residency_violations"],
                     "pass": passes(o, attainment)})
        if "samples" in o:  # several arrival samples: the row is the worst of them (verify.worst_sample)
            rows[-1].update(worst_sample=o["sample"], samples=o["samples"], samples_passed=o["samples_passed"])
    return rows


def slo_markdown(outcomes: list[Outcome], attainment: float) -> str:
    """One row per check; with several arrival samples a check's row is its worst sample, and a column says
    which sample that was and how many of them passed."""
    rows = slo_rows(outcomes, attainment)
    sampled = any("samples" in r for r in rows)
    lines = ["| check | " + ("worst sample (passed) | " if sampled else "") + "requests | within SLO | worst tenant | "
             "its share within SLO | TTFT p99 | not served | residency violations | meets |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if sampled else "")]
    for r in rows:
        p99 = "-" if r["ttft_p99_ms"] is None else f"{r['ttft_p99_ms']:,.0f} ms"
        which = (f"{r['worst_sample']} ({r['samples_passed']} of {r['samples']}) | " if "samples" in r
                 else "0 | " if sampled else "")
        lines.append(f"| {markdown_cell(r['check'])} | {which}{r['requests']:,} | {r['within_slo']:.2%} | "
                     f"{markdown_cell(r['worst_tenant'])} | "
                     f"{r['worst_tenant_within_slo']:.2%} | {p99} | {r['not_served']} | "
                     f"{r['residency_violations']} | {'yes' if r['pass'] else '**no**'} |")
    return "\n".join(lines)


def compare_rows(result: PlanResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if result.best is not None:
        rows.append(_row("plan", result.best, None))
    for n in result.naive:
        rows.append(_row(n.label, n.verdict, n.structural))
    best = result.best.placement.usd_per_hour if result.best else None
    cheapest_naive = min((r["usd_per_hour"] for r in rows[1:] if r["meets"]), default=None)
    for r in rows:
        r["plan_saves"] = (None if best is None or not r["meets"] or r["label"] == "plan"
                           else round(1 - best / r["usd_per_hour"], 4))
    if rows and cheapest_naive is not None and best is not None:
        rows[0]["plan_saves"] = round(1 - best / cheapest_naive, 4)
    return rows


def _row(label: str, v: Verdict | None, structural: str | None) -> dict[str, Any]:
    if v is None:
        return {"label": label, "sites": None, "where": [], "devices": None, "usd_per_hour": None,
                "usd_per_month": None,
                "meets": False, "why_not": structural}
    return {"label": label, "sites": len(v.placement.sites), "where": [
                f"{s.id} ({s.hardware} x {s.devices}{_chunk_note(s.chunk_tokens)})" for s in v.placement.sites], "devices": v.placement.devices,
            "usd_per_hour": round(v.placement.usd_per_hour, 2), "usd_per_month": round(v.placement.usd_per_month, 0),
            "meets": v.passed, "why_not": None if v.passed else f"not met after {v.rounds} refinement rounds "
            f"(last tried ${v.placement.usd_per_hour:.2f}/h): {v.reason}"}


def _chunk_note(chunk: int) -> str:
    return "" if chunk == DEFAULT_CHUNK else f", {chunk:,}-token prefill chunks"


def compare_markdown(result: PlanResult) -> str:
    lines = ["| placement | sites | devices | $/h | $/month | meets SLO at peak and N+1 | plan saves |",
             "|---|---|---|---|---|---|---|"]
    wheres = []
    for r in compare_rows(result):
        money = "-" if r["usd_per_hour"] is None else f"{r['usd_per_hour']:.2f}"
        month = "-" if r["usd_per_month"] is None else f"{r['usd_per_month']:,.0f}"
        why = r["why_not"] or ""
        meets = "yes" if r["meets"] else why if "not simulated" in why else f"no: {why}"
        saves = "-" if r["plan_saves"] is None else f"{r['plan_saves']:.0%}"
        if r["label"] == "plan" and r["plan_saves"] is not None:
            saves += " vs the cheapest naive"
        lines.append(f"| {markdown_cell(r['label'])} | {r['sites'] or '-'} | {r['devices'] or '-'} | {money} | "
                     f"{month} | {markdown_cell(meets)} | {saves} |")
        if r["where"] and len(r["where"]) <= 8:
            wheres.append(f"- {markdown_cell(r['label'])}: {markdown_cell(', '.join(r['where']))}")
    if result.from_naive is not None:
        wheres.append(f"\nThe plan is the {result.from_naive} placement: it passed every check for less than every "
                      "placement the screen proposed.")
    return "\n".join(lines + [""] + wheres)


def _placement_json(p: Placement) -> dict[str, Any]:
    return {"label": p.label, "usd_per_hour": round(p.usd_per_hour, 4), "usd_per_month": round(p.usd_per_month, 2),
            "devices": p.devices, "sites": [{"id": s.id, "city": s.city, "lat": s.lat, "lon": s.lon,
                                             "country": s.country, "jurisdiction": s.jurisdiction,
                                             "hardware": s.hardware, "chunk_tokens": s.chunk_tokens,
                                             "gpus_per_replica": s.gpus_per_replica,
                                             "usd_per_device_hour": s.usd_per_device_hour,
                                             "replicas": dict(s.replicas)} for s in p.sites]}


def write_tables(out: Path, result: PlanResult) -> list[Path]:
    att = result.demand.slo.attainment
    written = []
    doc: dict[str, Any] = {
        "demand": result.demand.name, "meets": result.best is not None, "backend": result.backend,
        "screen_s": round(result.screen_s, 2), "verify_s": round(result.verify_s, 2), "simulator_runs": result.runs,
        "samples": result.demand.verify.samples,
        "candidates": len(result.candidates), "peak_rps": round(float(result.traffic.total().max()), 3),
        "plan": None if result.best is None else _placement_json(result.best.placement),
        "checks": [] if result.best is None else slo_rows(result.best.outcomes, att),
        "proposals": [{**_placement_json(v.placement), "meets": v.passed, "why_not": v.reason,
                       "rounds": v.rounds, "history": v.history} for v in result.proposals],
        "compare": compare_rows(result) if result.naive else [], "plan_from_naive": result.from_naive,
    }
    (out / "plan.json").write_text(json.dumps(doc, indent=2) + "\n")
    written.append(out / "plan.json")
    if result.best is not None:
        p = result.best.placement
        write_cost_csv(out / "cost.csv", p)
        (out / "cost.md").write_text(f"# Cost of the plan for {markdown_cell(result.demand.name)}\n\n"
                                     f"{cost_markdown(p)}\n")
        n = result.demand.verify.samples
        each = f", each the worst of {n} arrival samples" if n > 1 else ""
        (out / "slo.md").write_text(f"# SLO checks of the plan (simulated, {result.demand.verify.policy} policy{each})\n\n"
                                    f"{slo_markdown(result.best.outcomes, att)}\n")
        written += [out / "cost.csv", out / "cost.md", out / "slo.md"]
    if result.naive:
        (out / "compare.md").write_text(f"# The plan beside naive placements ({markdown_cell(result.demand.name)})\n\n"
                                        f"{compare_markdown(result)}\n")
        written.append(out / "compare.md")
    return written
