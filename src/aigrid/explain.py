"""Render a decision (as served by GET /v1/decisions/ID) as rich tables: candidates by score, rejections."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from aigrid.core.types import AXES
from aigrid.first_token import first_token_ms
from aigrid.printable import printable
from aigrid.printable import printable_text as _text  # a cell of the server's text (an engine's error)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def urgency_line(u: dict[str, Any], chosen: str | None) -> str:
    """What the request's class and deadline changed, in one sentence."""
    parts = [f"urgency {u['label']}: SLO {u['slo_ms']:.0f} ms (policy {u['policy_slo_ms']:.0f} ms)"]
    if u.get("deadline_ms_left") is not None:
        parts.append(f"deadline {u['deadline_ms_left']:.0f} ms left")
    if u.get("weights_changed"):
        parts.append("weights " + ", ".join(f"{a} {old:.2f}->{new:.2f}" for a, (old, new)
                                            in sorted(u["weights_changed"].items())))
    if u.get("waits_where"):
        parts.append(f"too busy for this class: {', '.join(u['waits_where'])}")
    if u.get("too_late_at"):
        parts.append(f"cannot meet the deadline: {', '.join(u['too_late_at'])}")
    neutral = u.get("without_urgency")
    if neutral is not None and chosen is not None:
        parts.append("the policy as written would have chosen the same endpoint" if neutral == chosen
                     else f"the policy as written would have chosen {neutral} (the class changed the choice)")
    return "; ".join(parts)


def render_decision(d: dict[str, Any]) -> Group:
    head = Text.assemble(("decision ", "bold"), d["id"], f"  policy {d['policy']}  tenant {d.get('tenant', '?')}  "
                         f"model {d.get('model', '?')}  status {d.get('status', '?')}")
    client = d.get("client")
    where = "unknown" if not client else f"{client['lat']:.2f},{client['lon']:.2f}"
    # a whole answer's first byte (not streamed), a tool loop's or a refusal's is no TTFT: it was set beside the
    # predicted TTFT ("observed 2058 ms (18.42x the p50)" for quickstart's 32 tokens not streamed). The gateway's one
    # reading of the fact (first_token.first_token_ms); a decision of a gateway before the field is read as before
    first_ms = first_token_ms(d)
    lines = [head, Text(f"client location {where}; served by {d.get('served_by') or '-'}"
                        + (f" in {d['ttft_ms']:.0f} ms to first byte" if d.get("ttft_ms") is not None else "")
                        + ("" if first_ms is not None or d.get("ttft_ms") is None else
                           " (not a TTFT: a whole answer, not streamed, a tool loop's or a refusal's)")),
             Text(printable(d["reason"]), style="italic")]
    choice = d.get("model_choice")
    if choice:
        est = ", ".join(f"{m} {q:.2f}" for m, q in sorted(choice["estimates"].items(), key=lambda kv: kv[1]))
        saved = ("" if choice["chosen"] == choice["best"] or choice.get("cost_saved_usd") is None else
                 f"; saved ${choice['cost_saved_usd']:.6f} and {choice['ttft_saved_ms']:.0f} ms predicted TTFT "
                 f"against {choice['best']}")
        lines.append(Text(f"model {choice['chosen']} (right-sized): estimated quality {est}; eligible within "
                          f"{choice['max_quality_drop']:.2f} of the best: {', '.join(choice['eligible'])}{saved}"))
    urgency = d.get("urgency")
    if urgency:
        lines.append(Text(urgency_line(urgency, d.get("chosen"))))
    served = next((c for c in d["candidates"] if c["endpoint"] == d.get("served_by")), None)
    if served is not None and first_ms is not None and "predicted_ttft_p90_ms" in served:
        lines.append(Text(f"predicted TTFT p50 {served['predicted_ttft_ms']:.0f} ms, p90 "
                          f"{served['predicted_ttft_p90_ms']:.0f} ms; observed {first_ms:.0f} ms "
                          f"({first_ms / max(served['predicted_ttft_ms'], 1e-3):.2f}x the p50)"))
    # the caption names the unit of the time columns: only "pred. TTFT ms" did, and p90, rtt, queue, prefill and
    # gw rtt were bare numbers beside km
    t = Table(title="candidates (best first): TTFT = rtt + queue + prefill, in ms (p90 and gw rtt too); "
                    "rtt measured (m) or modelled",
              show_lines=False)
    for col in ("#", "endpoint", "model", "site", "juris.", *AXES, "total", "pred. TTFT ms", "p90", "rtt", "queue", "prefill",
                "km", "gw rtt"):
        t.add_column(col, justify="right" if col not in ("endpoint", "model", "site", "juris.") else "left")
    for i, c in enumerate(d["candidates"], 1):
        style = "bold green" if c["endpoint"] == d.get("served_by") else None
        t.add_row(str(i), *(_text(v) for v in (c["endpoint"], c.get("model", "-"), c["site"], c["jurisdiction"])),
                  *(f"{c['scores'][a]:.2f}" for a in AXES), f"{c['total']:.3f}",
                  f"{c['predicted_ttft_ms']:.0f}", _num(c.get("predicted_ttft_p90_ms")),
                  f"{c['rtt_ms']:.0f}{' m' if c.get('rtt_source') == 'measured' else ''}", f"{c['queue_ms']:.0f}",
                  f"{c['prefill_ms']:.0f}", "-" if c["distance_km"] is None else f"{c['distance_km']:,}",
                  "-" if c.get("measured_rtt_ms") is None else f"{c['measured_rtt_ms']:.1f}",
                  style=style)
    parts: list[Any] = [*lines, t]
    if d["rejected"]:
        r = Table(title="rejected (hard constraints)")
        for col in ("endpoint", "site", "filter", "reason"):
            r.add_column(col)
        for x in d["rejected"]:
            r.add_row(*(_text(x[k]) for k in ("endpoint", "site", "filter", "reason")))
        parts.append(r)
    if d.get("attempts"):
        a = Table(title="attempts")
        for col in ("endpoint", "ok", "ms", "error / note"):
            a.add_column(col)
        for x in d["attempts"]:
            a.add_row(_text(x["endpoint"]), "yes" if x["ok"] else "no", str(x.get("ms", "")),
                      _text(x.get("error") or _note(x)))
        parts.append(a)
    return Group(*parts)


def _note(attempt: dict[str, Any]) -> str:
    """What an answered attempt adds: its confidence, and an escalation (gateway/escalation.py)."""
    notes = []
    if attempt.get("confidence") is not None:
        notes.append(f"confidence {attempt['confidence']:.3f}")
    if attempt.get("escalated_from"):
        notes.append(f"escalated from {attempt['escalated_from']}")
    if attempt.get("hedge"):
        notes.append("hedge")
    return "; ".join(notes)
