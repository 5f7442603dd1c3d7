"""Turn a Run into numbers (summary), a rich table, a JSON file and PNG plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from aigrid.bench.runner import Run
from aigrid.spec.models import url_without_password

CLIENT_BUSY_CPU = 0.7
"""Above this share of one core, the load generator may itself limit what it measures."""


@dataclass(frozen=True)
class Slo:
    ttft_ms: float = 1000.0
    tpot_ms: float = 100.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of unsorted values; None for none."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def dist(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """mean/p50/p90/p99/max of seconds, in milliseconds by default."""
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * scale, 3)
    return {"mean": ms(sum(values) / len(values)) if values else None, "p50": ms(percentile(values, 50)),
            "p90": ms(percentile(values, 90)), "p99": ms(percentile(values, 99)),
            "max": ms(max(values)) if values else None}


def summary(run: Run, slo: Slo) -> dict[str, Any]:
    ok = [r for r in run.results if r.ok]
    sent = [r.sent for r in ok if r.sent is not None]  # every answered request was sent
    ends = [r.sent + (r.e2e or 0.0) for r in ok if r.sent is not None]
    span = (max(ends) - min(sent)) if ends else 0.0
    span = span or run.wall_s
    # a whole answer (--no-stream) has no TTFT nor TPOT: it counted as within the SLO, so a run of 700 ms answers
    # said "100% within TTFT<=100ms, TPOT<=5ms". Goodput is of streamed answers only (None: none was streamed)
    timed = [r for r in ok if r.ttft is not None]
    good = [r for r in timed if r.ttft is not None and r.ttft * 1000 <= slo.ttft_ms
            and (r.tpot is None or r.tpot * 1000 <= slo.tpot_ms)]
    unmeasured = bool(ok) and not timed
    # a request never written (its connection refused) has no send time, nor a lag
    lags = [r.sent - r.planned for r in run.results if r.planned is not None and r.sent is not None]
    errors: dict[str, int] = {}
    for r in run.results:
        if not r.ok:
            key = (r.error or "?")[:120]
            errors[key] = errors.get(key, 0) + 1
    cpu_share = run.cpu_s / run.wall_s if run.wall_s else 0.0
    return {
        "requests": run.plans, "completed": len(ok), "failed": len(run.results) - len(ok),
        "mode": "closed" if run.config.concurrency else "open", "concurrency": run.config.concurrency,
        "duration_s": round(run.wall_s, 3),
        "request_rate": round(len(ok) / span, 3) if span else 0.0,
        "output_tokens_per_s": round(sum(r.output_tokens for r in ok) / span, 1) if span else 0.0,
        "goodput": {"slo": asdict(slo),
                    "requests_per_s": None if unmeasured else round(len(good) / span, 3) if span else 0.0,
                    "fraction": None if unmeasured else round(len(good) / len(ok), 4) if ok else 0.0},
        "ttft_ms": dist([r.ttft for r in ok if r.ttft is not None]),
        "tpot_ms": dist([r.tpot for r in ok if r.tpot is not None]),
        "itl_ms": dist([x for r in ok for x in r.itl]),
        "e2e_ms": dist([r.e2e for r in ok if r.e2e is not None]),
        "client": {"cpu_s": round(run.cpu_s, 3), "cpu_share_of_one_core": round(cpu_share, 3),
                   "send_lag_ms": dist(lags) if lags else None,
                   "saturated": cpu_share > CLIENT_BUSY_CPU},
        "errors": errors,
        # as every printed line quotes them: a user:password@ is user:***@ (bench.json is what a run is shared as)
        "urls": [url_without_password(u) for u in run.config.urls], "model": run.config.model,
    }


def table(s: dict[str, Any], title: str = "aigrid bench") -> Table:
    t = Table(title=title)
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p99", "max"):
        t.add_column(col, justify="right")
    for key, label in (("ttft_ms", "TTFT (ms)"), ("itl_ms", "inter-token (ms)"), ("tpot_ms", "TPOT (ms)"),
                       ("e2e_ms", "end-to-end (ms)")):
        d = s[key]
        t.add_row(label, *("-" if d[c] is None else f"{d[c]:.2f}" for c in ("mean", "p50", "p90", "p99", "max")))
    return t


def summary_line(s: dict[str, Any]) -> str:
    """The run in one line under the table (rich markup): requests ok and failed, rates, goodput, the client's
    own CPU and send lag. It was the table's caption, wrapped to the table's 76 columns and centred: three
    broken lines (`goodput 0.00 req/s (0%` / `within TTFT<=1000ms, ...`) on any terminal and in a log."""
    c, g = s["client"], s["goodput"]
    slo = f"TTFT<={g['slo']['ttft_ms']:g}ms, TPOT<={g['slo']['tpot_ms']:g}ms"
    goodput = (f"goodput - (not streamed: no TTFT or TPOT to hold to {slo})" if g["fraction"] is None else
               f"goodput {g['requests_per_s']:.2f} req/s ({100 * g['fraction']:.0f}% within {slo})")
    return (f"{s['completed']}/{s['requests']} ok, {s['failed']} failed in {s['duration_s']:.1f}s  |  "
            f"{s['request_rate']:.2f} req/s, {s['output_tokens_per_s']:.0f} tok/s, {goodput}  |  "
            f"client CPU {100 * c['cpu_share_of_one_core']:.0f}% of a core"
            + (f", send lag p99 {c['send_lag_ms']['p99']:.1f} ms" if c.get("send_lag_ms") else "")
            + ("  [bold red]CLIENT SATURATED: numbers are a lower bound[/]" if c["saturated"] else ""))


def write_json(path: Path, run: Run, s: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{k: v for k, v in asdict(r).items() if k != "itl"} for r in run.results]
    path.write_bytes(orjson.dumps({"summary": s, "requests": records}, option=orjson.OPT_INDENT_2))


def write_plots(out_dir: Path, run: Run) -> list[Path]:
    """ttft_cdf.png, latency_over_time.png, itl_hist.png. Needs matplotlib (the `sim` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in run.results if r.ok]
    written: list[Path] = []

    def save(fig: Any, ax: Any, name: str, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if legend and ax.get_legend_handles_labels()[0]:  # no line (every request failed): matplotlib's warning
            ax.legend()
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("ttft", "TTFT"), ("e2e", "end-to-end")):
        xs = sorted(getattr(r, key) * 1000 for r in ok if getattr(r, key) is not None)
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
    ax.set_xscale("log")
    save(fig, ax, "ttft_cdf.png", "ms", "fraction of requests", "latency CDF")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r.sent or 0.0 for r in ok], [r.ttft * 1000 if r.ttft is not None else (r.e2e or 0) * 1000 for r in ok],
               s=4, label="TTFT" if run.config.stream else "end-to-end")
    bad = [r for r in run.results if not r.ok]
    if bad:
        # one never written at its planned time (closed loop: the run's start)
        ax.scatter([r.sent if r.sent is not None else r.planned or 0.0 for r in bad], [0] * len(bad), s=10,
                   c="red", marker="x", label="failed")
    save(fig, ax, "latency_over_time.png", "request sent at (s)", "ms", "latency over the run")

    fig, ax = plt.subplots(figsize=(6, 4))
    itl = [x * 1000 for r in ok for x in r.itl]
    if itl:
        ax.hist(itl, bins=60)
    save(fig, ax, "itl_hist.png", "inter-token latency (ms)", "count", "inter-token latency", legend=False)
    return written
